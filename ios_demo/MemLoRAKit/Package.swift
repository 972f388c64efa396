// swift-tools-version: 5.9
// MemLoRAKit: the memlora memory loop without a model runtime (Foundation + SQLite3 only).
// Everything here runs in `swift test` on a Mac (or Linux with libsqlite3-dev); the app adds Core ML.
import PackageDescription

let package = Package(
    name: "MemLoRAKit",
    platforms: [.iOS("18.0"), .macOS("15.0")],  // string form: tools 5.9 has no .v18 constant
    products: [
        .library(name: "MemLoRAKit", targets: ["MemLoRAKit"]),
    ],
    targets: [
        // Apple platforms ship SQLite3 as a module; on Linux this system library maps libsqlite3.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .target(
            name: "MemLoRAKit",
            dependencies: [.target(name: "CSQLite", condition: .when(platforms: [.linux]))]
        ),
        .testTarget(name: "MemLoRAKitTests", dependencies: ["MemLoRAKit"]),
    ]
)
