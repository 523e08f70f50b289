import Foundation
import XCTest

/// A small C program on GLib that does what libostree does with GVariants,
/// to compare our bytes with GLib's. Built once per test run.
public enum GLibHelper {
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
      if (argc == 4 && strcmp (argv[1], "print") == 0) {
        /* print TYPE FILE: g_variant_print with type annotations, and whether
           the bytes are in normal form */
        GVariant *v = load (argv[2], argv[3]);
        if (!v) return 2;
        gchar *text = g_variant_print (v, TRUE);
        printf ("%s\n%s\n", g_variant_is_normal_form (v) ? "normal" : "not-normal", text);
        return 0;
      }
      if (argc == 5 && strcmp (argv[1], "parse") == 0) {
        /* parse TYPE TEXT OUT: g_variant_parse, serialized in normal form */
        GError *err = NULL;
        GVariant *v = g_variant_parse (G_VARIANT_TYPE (argv[2]), argv[3], NULL, NULL, &err);
        if (!v) { fprintf (stderr, "%s\n", err->message); return 2; }
        GVariant *n = g_variant_get_normal_form (g_variant_ref_sink (v));
        return g_file_set_contents (argv[4], g_variant_get_data (n), g_variant_get_size (n), NULL) ? 0 : 2;
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
    public static func path() throws -> String {
        if let built { return built }
        if let failure { throw XCTSkip(failure) }
        func succeeds(_ command: String) -> Bool { (try? TestSupport.run("/bin/sh", ["-c", command]).status) == 0 }
        guard succeeds("command -v cc && command -v pkg-config && pkg-config --exists glib-2.0") else {
            failure = "cc, pkg-config or GLib development files are not installed"
            throw XCTSkip(failure!)
        }
        let dir = NSTemporaryDirectory() + "cairn-glib-helper-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try source.write(toFile: dir + "/helper.c", atomically: false, encoding: .utf8)
        let r = try TestSupport.run("/bin/sh", ["-c", "cc -O1 -o \(dir)/helper \(dir)/helper.c $(pkg-config --cflags --libs glib-2.0)"])
        guard r.status == 0 else {
            failure = "cannot build the GLib helper: \(r.stderr)"
            XCTFail(failure!)
            throw XCTSkip(failure!)
        }
        built = dir + "/helper"
        return built!
    }
}
