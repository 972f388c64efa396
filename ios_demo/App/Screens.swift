import MemLoRAKit
import SwiftUI
import UniformTypeIdentifiers

struct RootView: View {
    @Bindable var vm: DemoModel

    var body: some View {
        VStack(alignment: .leading, spacing: 4) {
            Text(vm.status).font(.caption).padding(.horizontal)
            if let p = vm.progress { ProgressView(value: p).padding(.horizontal) }
            if let w = vm.ramWarning { Text(w).font(.caption).foregroundStyle(.red).padding(.horizontal) }
            TabView {
                BundleScreen(vm: vm).tabItem { Label("Bundle", systemImage: "shippingbox") }
                ChatScreen(vm: vm).tabItem { Label("Chat", systemImage: "bubble.left.and.bubble.right") }
                MemoryScreen(vm: vm).tabItem { Label("Memories", systemImage: "brain") }
                PipelineScreen(vm: vm).tabItem { Label("Pipeline", systemImage: "arrow.triangle.branch") }
                SettingsScreen(vm: vm).tabItem { Label("Settings", systemImage: "slider.horizontal.3") }
                SelfTestScreen(vm: vm).tabItem { Label("Self-test", systemImage: "checkmark.seal") }
            }
        }
    }
}

struct BundleScreen: View {
    @Bindable var vm: DemoModel
    @State private var picking = false

    var body: some View {
        Form {
            Section("Documents/bundle (Finder or the Files app)") {
                Text("Drop the bundle folder into On My iPhone > MemLoRA > bundle").font(.caption)
                Button("Open Documents/bundle") { vm.openBundle(BundlePlaces.defaultBundle) }.disabled(vm.busy)
            }
            Section("Anywhere in Files (iCloud Drive, USB drive, ...)") {
                Button("Import a folder…") { picking = true }.disabled(vm.busy)
            }
        }
        .fileImporter(isPresented: $picking, allowedContentTypes: [.folder], allowsMultipleSelection: false) { result in
            if case .success(let urls) = result, let url = urls.first { vm.importAndOpen(url) }
            else if case .failure(let e) = result { vm.status = "Import failed: \(e.localizedDescription)" }
        }
    }
}

struct ChatScreen: View {
    @Bindable var vm: DemoModel
    @State private var input = ""

    var body: some View {
        VStack {
            ScrollView {
                LazyVStack(alignment: .leading, spacing: 8) {
                    ForEach(vm.chat) { m in
                        VStack(alignment: .leading, spacing: 2) {
                            Text((m.fromUser ? "you: " : "memlora: ") + m.text)
                            if !m.metrics.isEmpty { Text(m.metrics).font(.caption2).foregroundStyle(.secondary) }
                            if !m.memoriesUsed.isEmpty {
                                Text("memories used: " + m.memoriesUsed.joined(separator: " | ")).font(.caption2).foregroundStyle(.secondary)
                            }
                        }
                        .padding(8)
                        .frame(maxWidth: .infinity, alignment: .leading)
                        .background(m.fromUser ? Color.blue.opacity(0.08) : Color.gray.opacity(0.08))
                        .clipShape(RoundedRectangle(cornerRadius: 8))
                    }
                    if !vm.streaming.isEmpty { Text("memlora: " + vm.streaming).padding(8) }
                }
                .padding(.horizontal)
            }
            HStack {
                TextField("Message", text: $input, axis: .vertical).textFieldStyle(.roundedBorder)
                if vm.busy {
                    Button("Stop") { vm.stop() }.buttonStyle(.bordered)
                } else {
                    Button("Send") { vm.send(input); input = "" }
                        .buttonStyle(.borderedProminent)
                        .disabled(input.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
                }
            }
            .padding()
        }
    }
}

struct MemoryScreen: View {
    @Bindable var vm: DemoModel

    var body: some View {
        List {
            Section {
                HStack {
                    Button("Refresh") { try? vm.refreshMemories() }
                    Spacer()
                    Button("Export JSON") { vm.exportMemories() }
                    if let url = vm.memoriesURL { ShareLink(item: url) }
                    Spacer()
                    Button("Wipe", role: .destructive) { vm.wipe() }
                }
                .buttonStyle(.borderless)
            }
            Section("Memories (\(vm.memories.count))") {
                ForEach(vm.memories, id: \.id) { m in
                    VStack(alignment: .leading) {
                        Text(m.text)
                        Text("\(m.user) · \(m.updatedAt)").font(.caption2).foregroundStyle(.secondary)
                    }
                    .swipeActions { Button("Delete", role: .destructive) { vm.delete(m.id) } }
                }
            }
            Section("History") {
                ForEach(vm.history, id: \.id) { h in
                    Text("\(h.at) \(h.event) (\(h.actor)): \(h.oldText ?? "∅") → \(h.newText ?? "∅")").font(.caption)
                }
            }
        }
    }
}

struct PipelineScreen: View {
    @Bindable var vm: DemoModel

    var body: some View {
        List {
            ForEach(Array(vm.traces.enumerated()), id: \.offset) { item in
                TraceRow(t: item.element)
            }
        }
    }
}

struct TraceRow: View {
    let t: StageTrace

    var body: some View {
            VStack(alignment: .leading, spacing: 4) {
                Text("\(t.op.rawValue) · adapter \(t.adapter ?? "base") · \(String(format: "%.0f", t.totalMs)) ms · \(t.result.stoppedBy) · \(t.result.promptTokens) prompt / \(t.result.newTokens) new tokens")
                    .font(.subheadline)
                DisclosureGroup("prompt") { Text(t.prompt).font(.system(size: 10, design: .monospaced)).textSelection(.enabled) }
                Text("raw output:\n\(t.raw)").font(.system(size: 11, design: .monospaced)).textSelection(.enabled)
                if !t.errors.isEmpty { Text("parse errors: " + t.errors.joined(separator: "; ")).font(.caption).foregroundStyle(.red) }
            }
    }
}

struct SettingsScreen: View {
    @Bindable var vm: DemoModel

    private func binding(_ key: WritableKeyPath<UiSettings, Int>) -> Binding<Double> {
        Binding(get: { Double(vm.settings[keyPath: key]) }, set: { v in
            var s = vm.settings
            s[keyPath: key] = Int(v)
            vm.updateSettings(s)
        })
    }

    var body: some View {
        Form {
            slider("extract max new tokens", \.extractTokens, 16...512)
            slider("update max new tokens", \.updateTokens, 16...1024)
            slider("answer max new tokens", \.answerTokens, 8...256)
            slider("answer top-k memories", \.answerTopK, 1...50)
            slider("update top-k memories", \.updateTopK, 1...20)
            VStack(alignment: .leading) {
                Text("temperature: \(String(format: "%.2f", vm.settings.temperature)) (0 = greedy, as the self-test)")
                Slider(value: Binding(get: { vm.settings.temperature }, set: { v in
                    var s = vm.settings; s.temperature = (v * 100).rounded() / 100; vm.updateSettings(s)
                }), in: 0...1.5)
            }
            Picker("Core ML compute units (next open)", selection: Binding(get: { vm.settings.computeUnits }, set: { v in
                var s = vm.settings; s.computeUnits = v; vm.updateSettings(s)
            })) {
                ForEach(["auto", "all", "cpuAndNeuralEngine", "cpuAndGPU", "cpuOnly"], id: \.self) { Text($0) }
            }
        }
    }

    private func slider(_ label: String, _ key: WritableKeyPath<UiSettings, Int>, _ range: ClosedRange<Double>) -> some View {
        VStack(alignment: .leading) {
            Text("\(label): \(vm.settings[keyPath: key])")
            Slider(value: binding(key), in: range, step: 1)
        }
    }
}

struct SelfTestScreen: View {
    @Bindable var vm: DemoModel

    var body: some View {
        ScrollView {
            VStack(alignment: .leading, spacing: 12) {
                Button("Run conformance.json on this device") { vm.runSelfTest() }
                    .buttonStyle(.borderedProminent)
                    .disabled(vm.busy)
                if let url = vm.reportURL { ShareLink("Share conformance-report.json", item: url) }
                Text(vm.selfTest).font(.system(size: 12, design: .monospaced)).textSelection(.enabled)
                Text("On the Mac: python -m memlora.device_report conformance-report.json --bundle BUNDLE")
                    .font(.caption).foregroundStyle(.secondary)
            }
            .padding()
        }
    }
}
