import SwiftUI

/// The memlora memory loop on an iPhone: a bundle's Core ML functions (one per adapter, the base
/// weights shared) behind MemLoRAKit's loop, store and conformance runner.
@main
struct MemLoRAApp: App {
    @State private var model = DemoModel()

    var body: some Scene {
        WindowGroup { RootView(vm: model) }
    }
}
