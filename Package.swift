// swift-tools-version:6.0
import PackageDescription

// Layers, bottom to top:
//   C system libraries → CairnSystem (syscall wrappers) → Composefs, Trust
//   (pure Swift on Glibc + libcrypto, no Foundation: they go into the
//   initramfs) → CairnSysroot (the sysroot read without libostree or
//   Foundation) → CairnRepo (libostree) → CairnDeploy → executables: the
//   front end `cairn` (CairnSysroot and below only) and `cairn-full`.
let package = Package(
    name: "cairn",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cairn", targets: ["cairn"]),
        .executable(name: "cairn-full", targets: ["cairn-full"]),
        .executable(name: "cairn-prepare-root", targets: ["cairn-prepare-root"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COSTree", pkgConfig: "ostree-1", providers: [.apt(["libostree-dev"])]),
        .systemLibrary(name: "CLibArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CGPGME", pkgConfig: "gpgme", providers: [.apt(["libgpgme-dev"])]),

        .target(name: "CCairnShim"),
        .target(name: "CairnSystem", dependencies: ["CCairnShim"]),
        .target(name: "Composefs", dependencies: ["CairnSystem", "CCrypto"]),
        .target(name: "Trust", dependencies: ["CairnSystem", "CCrypto"]),
        .target(name: "CairnRepo", dependencies: ["COSTree", "CLibArchive", "CCrypto", "CairnSystem", "Composefs", "Trust"]),
        // What a sysroot holds (deployments, boot entries, state records,
        // commit objects) read without libostree or Foundation, for the
        // front end's fast commands; CairnDeploy writes it.
        .target(name: "CairnSysroot", dependencies: ["CairnSystem", "CCairnShim", "Trust"]),
        .target(name: "CairnDeploy", dependencies: ["CairnSysroot", "CairnRepo", "CairnSystem", "CCairnShim", "Composefs", "Trust", "PrepareRoot"]),
        // The front end, installed as `cairn`: answers `status`, `image
        // digest` and `--version` itself, in milliseconds (no libostree,
        // GLib, gpgme, libarchive or Foundation to load), and hands every
        // other command to cairn-full.
        .executableTarget(name: "cairn", dependencies: ["CairnSysroot", "CairnSystem", "Composefs", "Trust"]),
        .executableTarget(name: "cairn-full", dependencies: [
            "CairnRepo", "CairnDeploy", "CairnSysroot", "CairnSystem", "Composefs", "Trust",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // The initramfs program: no Foundation, no GLib (built static).
        // CAIRN_TEST_KNOBS (debug builds, which the host tests run) compiles
        // in the environment switch CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE for
        // kernels without fs-verity; the release build for an initramfs
        // (scripts/build-prepare-root.sh, which checks) has no such switch.
        .target(name: "PrepareRoot", dependencies: ["Composefs", "Trust", "CairnSystem", "CCairnShim", "CCrypto"],
                swiftSettings: [.define("CAIRN_TEST_KNOBS", .when(configuration: .debug))]),
        .executableTarget(name: "cairn-prepare-root", dependencies: ["PrepareRoot"]),

        .testTarget(name: "ComposefsTests", dependencies: ["Composefs"], exclude: ["Regressions"]),
        .testTarget(name: "TrustTests", dependencies: ["Trust", "CairnTestSupport"], exclude: ["Regressions"]),
        .target(name: "CairnTestSupport", path: "Tests/CairnTestSupport"),
        .testTarget(name: "CairnCLITests", dependencies: ["CairnTestSupport"]),
        .testTarget(name: "CairnRepoTests", dependencies: ["CairnRepo", "CairnSysroot", "COSTree", "Composefs", "CairnSystem"]),
        .testTarget(name: "PrepareRootTests", dependencies: ["PrepareRoot", "Trust", "CairnTestSupport"], exclude: ["Regressions"]),
    ]
)
