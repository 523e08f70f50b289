import Foundation
import XCTest
import CairnTestSupport
@testable import Trust

/// Runs a program found on PATH, returning its exit status and output.
@discardableResult
func runTool(_ args: [String], input: Data? = nil, cwd: String? = nil) throws -> (status: Int32, out: String, err: String) {
    let r = try TestSupport.run("/usr/bin/env", args, stdin: input, cwd: cwd)
    return (r.status, r.stdout, r.stderr)
}

/// Whether `tool` is on PATH.
func haveTool(_ tool: String) -> Bool {
    (try? runTool(["sh", "-c", "command -v \(tool)"]).status) == 0
}

func requireTool(_ tool: String) throws {
    try TestSupport.require(tool: tool)
}

func makeTempDir() throws -> String {
    let dir = NSTemporaryDirectory() + "trust-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeBytes(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

func unhex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = Array(s.utf8)[...]
    while chars.count >= 2 {
        out.append(UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16)!)
        chars = chars.dropFirst(2)
    }
    return out
}

/// A throwaway ostree repository with two commits made by the ostree CLI.
struct OstreeFixture {
    let dir: String
    let repo: String
    let first: String    // checksum of the first commit (with metadata and detached metadata)
    let second: String   // its child

    static let digest: [UInt8] = Array(0..<32)

    init() throws {
        try requireTool("ostree")
        dir = try makeTempDir()
        repo = dir + "/R"
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try "hi\n".write(toFile: tree + "/a", atomically: false, encoding: .utf8)
        try "x\n".write(toFile: tree + "/sub/b", atomically: false, encoding: .utf8)
        var r = try runTool(["ostree", "init", "--repo=\(repo)", "--mode=bare-user"])
        XCTAssertEqual(r.status, 0, r.err)
        let digestText = "@ay [" + OstreeFixture.digest.map(String.init).joined(separator: ",") + "]"
        r = try runTool(["ostree", "commit", "--repo=\(repo)", "-b", "test", "-s", "first subject", "-m", "the body\nline2",
                     "--timestamp=2021-03-04 05:06:07 +0000",
                     "--add-metadata-string=version=1.0", "--add-metadata=foo=@ay [1,2]",
                     "--add-metadata=flag=true", "--add-metadata=num=uint64 1234567890123",
                     "--add-metadata=ostree.composefs.digest.v0=\(digestText)",
                     "--add-detached-metadata-string=k=v", "--add-detached-metadata-string=zz=yy", tree])
        XCTAssertEqual(r.status, 0, r.err)
        first = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        r = try runTool(["ostree", "commit", "--repo=\(repo)", "-b", "test", "-s", "second", tree])
        XCTAssertEqual(r.status, 0, r.err)
        second = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func objectPath(_ checksum: String, _ ext: String) -> String {
        let a = checksum.startIndex, b = checksum.index(a, offsetBy: 2)
        return "\(repo)/objects/\(checksum[a..<b])/\(checksum[b...]).\(ext)"
    }

    func commitBytes(_ checksum: String) throws -> [UInt8] { try readBytes(objectPath(checksum, "commit")) }
    func detachedBytes(_ checksum: String) throws -> [UInt8] { try readBytes(objectPath(checksum, "commitmeta")) }

    func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
}

/// A small C program on GLib that does what libostree does with GVariants,
/// to compare our bytes with GLib's. Built once per test run.
enum GLibHelper {
    static let source = #"""
    #include <glib.h>
    #include <stdio.h>
    #include <string.h>

    static GVariant *load (const char *type, const char *path) {
      gchar *data; gsize len; GError *err = NULL;
      if (!g_file_get_contents (path, &data, &len, &err)) { fprintf (stderr, "%s\n", err->message); return NULL; }
      GBytes *b = g_bytes_new_take (data, len);
      GVariant *v = g_variant_new_from_bytes (G_VARIANT_TYPE (type), b, FALSE);
      g_bytes_unref (b);
      return g_variant_ref_sink (v);
    }

    int main (int argc, char **argv) {
      if (argc >= 3 && strcmp (argv[1], "normal") == 0) {
        /* normal TYPE FILE...: one 1/0 per file: g_variant_is_normal_form */
        for (int i = 3; i < argc; i++) {
          GVariant *v = load (argv[2], argv[i]);
          putchar (v && g_variant_is_normal_form (v) ? '1' : '0');
          if (v) g_variant_unref (v);
        }
        putchar ('\n');
        return 0;
      }
      if (argc == 5 && strcmp (argv[1], "append") == 0) {
        /* append OLD|- SIGFILE OUT: libostree's _sign_detached_metadata_append */
        GVariant *old = strcmp (argv[2], "-") == 0 ? NULL : load ("a{sv}", argv[2]);
        gchar *sig; gsize siglen;
        if (!g_file_get_contents (argv[3], &sig, &siglen, NULL)) return 2;
        GVariantDict dict;
        g_variant_dict_init (&dict, old);
        GVariant *existing = g_variant_dict_lookup_value (&dict, "ostree.sign.ed25519", G_VARIANT_TYPE ("aay"));
        GVariantBuilder *builder = g_variant_builder_new (G_VARIANT_TYPE ("aay"));
        if (existing) {
          gsize n = g_variant_n_children (existing);
          for (gsize i = 0; i < n; i++) g_variant_builder_add_value (builder, g_variant_get_child_value (existing, i));
        }
        g_variant_builder_add (builder, "@ay", g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, sig, siglen, 1));
        g_variant_dict_insert_value (&dict, "ostree.sign.ed25519", g_variant_builder_end (builder));
        GVariant *out = g_variant_ref_sink (g_variant_dict_end (&dict));
        GVariant *normal = g_variant_get_normal_form (out);
        if (!g_file_set_contents (argv[4], g_variant_get_data (normal), g_variant_get_size (normal), NULL)) return 2;
        return 0;
      }
      if (argc == 5 && strcmp (argv[1], "normalize") == 0) {
        /* normalize TYPE FILE OUT: g_variant_get_normal_form */
        GVariant *v = load (argv[2], argv[3]);
        GVariant *n = g_variant_get_normal_form (v);
        return g_file_set_contents (argv[4], g_variant_get_data (n), g_variant_get_size (n), NULL) ? 0 : 2;
      }
      return 1;
    }
    """#

    nonisolated(unsafe) static var built: String? = nil
    nonisolated(unsafe) static var failure: String? = nil

    /// Path of the helper, or XCTSkip when there is no C compiler or GLib headers.
    static func path() throws -> String {
        if let built { return built }
        if let failure { throw XCTSkip(failure) }
        guard haveTool("cc"), haveTool("pkg-config"), (try? runTool(["pkg-config", "--exists", "glib-2.0"]).status) == 0 else {
            failure = "cc, pkg-config or GLib development files are not installed"
            throw XCTSkip(failure!)
        }
        let dir = try makeTempDir()
        try source.write(toFile: dir + "/helper.c", atomically: false, encoding: .utf8)
        let r = try runTool(["sh", "-c", "cc -O1 -o \(dir)/helper \(dir)/helper.c $(pkg-config --cflags --libs glib-2.0)"])
        guard r.status == 0 else {
            failure = "cannot build the GLib helper: \(r.err)"
            XCTFail(failure!)
            throw XCTSkip(failure!)
        }
        built = dir + "/helper"
        return built!
    }
}
