import CairnSystem
import COSTree

typealias GErrorPointer = UnsafeMutablePointer<UnsafeMutablePointer<GError>?>

/// Calls a GLib-style function that reports failure through a `GError**`,
/// turning the error into a `RepoError` with `context`.
@discardableResult
func gcall(_ context: @autoclosure () -> String, _ body: (GErrorPointer) -> gboolean) throws -> Bool {
    var error: UnsafeMutablePointer<GError>? = nil
    if body(&error) != 0 { return true }
    throw RepoError(context(), consumeGError(error))
}

/// The message of a GError, which it frees.
func consumeGError(_ error: UnsafeMutablePointer<GError>?) -> String {
    guard let error else { return "unknown error" }
    defer { g_error_free(error) }
    return error.pointee.message.map { String(cString: $0) } ?? "unknown error"
}

/// Takes ownership of a `g_malloc`ed C string.
func takeGString(_ p: UnsafeMutablePointer<gchar>?) -> String? {
    guard let p else { return nil }
    defer { g_free(p) }
    return String(cString: p)
}

func unref(_ object: OpaquePointer?) {
    if let object { g_object_unref(UnsafeMutableRawPointer(object)) }
}

func unref<T>(_ object: UnsafeMutablePointer<T>?) {
    if let object { g_object_unref(object) }
}

/// An owned GVariant reference, released on deinit.
final class Variant {
    let raw: OpaquePointer

    /// Takes over a reference the caller owns (floating references are sunk).
    init(taking raw: OpaquePointer) {
        self.raw = g_variant_ref_sink(raw)
    }

    /// A value of type `typeString` over `gbytes` (a GBytes, which it
    /// references); nil when they are not in GVariant normal form.
    convenience init?(normalForm gbytes: OpaquePointer?, type typeString: String) {
        let type = g_variant_type_new(typeString)
        defer { g_variant_type_free(type) }
        self.init(taking: g_variant_new_from_bytes(type, gbytes, 0))
        guard g_variant_is_normal_form(raw) != 0 else { return nil }
    }

    /// A value of type `typeString` holding a copy of `bytes`; nil when
    /// they are not in GVariant normal form.
    convenience init?(normalForm bytes: [UInt8], type typeString: String) {
        let gbytes = bytes.withUnsafeBytes { g_bytes_new($0.baseAddress, gsize($0.count)) }
        defer { g_bytes_unref(gbytes) }
        self.init(normalForm: gbytes, type: typeString)
    }

    deinit { g_variant_unref(raw) }

    var childCount: Int { Int(g_variant_n_children(raw)) }

    func child(_ i: Int) -> Variant {
        Variant(taking: g_variant_get_child_value(raw, gsize(i)))
    }

    var typeString: String { String(cString: g_variant_get_type_string(raw)) }

    var string: String {
        var len: gsize = 0
        return String(cString: g_variant_get_string(raw, &len))
    }

    /// The bytes of a fixed-size-element array such as `ay`.
    var bytes: [UInt8] {
        let size = Int(g_variant_get_size(raw))
        guard size > 0, let data = g_variant_get_data(raw) else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: size))
    }

    var uint64: UInt64 { UInt64(g_variant_get_uint64(raw)) }
    var uint32: UInt32 { g_variant_get_uint32(raw) }
    var boolean: Bool { g_variant_get_boolean(raw) != 0 }

    /// The value inside a `v`.
    var unboxed: Variant { Variant(taking: g_variant_get_variant(raw)) }

    /// GVariant text format, as `ostree show` prints values.
    var text: String { takeGString(g_variant_print(raw, 1)) ?? "" }

    /// The serialized bytes.
    var data: [UInt8] {
        let size = Int(g_variant_get_size(raw))
        guard size > 0, let data = g_variant_get_data(raw) else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: size))
    }
}

