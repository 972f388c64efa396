import CoreML
import Foundation
import MemLoRAKit
import Observation
import UIKit

struct ChatMessage: Identifiable {
    let id = UUID()
    let fromUser: Bool
    let text: String
    var metrics: String = ""
    var memoriesUsed: [String] = []
}

/// Op settings the user can change (defaults from the loop).
struct UiSettings: Equatable {
    var extractTokens = 256
    var updateTokens = 512
    var answerTokens = 48
    var temperature = 0.0
    var answerTopK = 30
    var updateTopK = 5
    var computeUnits = "auto"  // auto (fp32: CPU, fp16: all), all, cpuAndNeuralEngine, cpuAndGPU, cpuOnly
}

/// All app state. Model work runs one job at a time off the main thread (a Core ML state and the
/// store are not shared across concurrent calls); UI state changes on the main thread only.
@Observable
final class DemoModel {
    private let user = "me"

    var status = "Pick a bundle: put it in Documents/bundle (Finder or Files) or import a folder."
    var progress: Double?
    var ramWarning: String?
    var busy = false
    var settings = UiSettings()
    var streaming = ""
    var chat: [ChatMessage] = []
    var memories: [Memory] = []
    var history: [HistoryEntry] = []
    var traces: [StageTrace] = []
    var selfTest = ""
    var reportURL: URL?
    var memoriesURL: URL?

    @ObservationIgnored private var bundle: MemLoRABundle?
    @ObservationIgnored private var engine: Engine?
    @ObservationIgnored private var tokenizer: HFTokenizer?
    @ObservationIgnored private var store: MemoryStore?
    @ObservationIgnored private var loop: MemoryLoop?

    private func ui(_ block: @escaping () -> Void) { DispatchQueue.main.async(execute: block) }

    /// Run `block` off the main thread, one job at a time; `block` returns what to run on the
    /// main thread once the job is over (e.g. the next job).
    private func background(_ what: String, _ block: @escaping () async throws -> (() -> Void)?) {
        if busy { return }
        busy = true
        Task.detached(priority: .userInitiated) { [self] in
            var next: (() -> Void)? = nil
            do {
                next = try await block()
            } catch let e as BundleError {
                ui { self.status = e.message }
            } catch {
                ui { self.status = "\(what) failed: \(error)" }
            }
            ui { self.busy = false; self.progress = nil; next?() }
        }
    }

    private func units(_ name: String) -> MLComputeUnits? {
        switch name {
        case "all": return .all
        case "cpuAndNeuralEngine": return .cpuAndNeuralEngine
        case "cpuAndGPU": return .cpuAndGPU
        case "cpuOnly": return .cpuOnly
        default: return nil
        }
    }

    /// Open `dir`: manifest, sha256 of every file (with progress), Core ML functions, store.
    func openBundle(_ dir: URL) {
        let computeUnits = units(settings.computeUnits)
        background("opening the bundle") { [self] in
            close()
            ui { self.status = "Checking \(dir.lastPathComponent) (sha256 of every file) ..." }
            let b = try MemLoRABundle.open(dir, verify: true) { done, total, _ in
                let p = total > 0 ? Double(done) / Double(total) : nil
                self.ui { self.progress = p }
            }
            let artifact = try b.selectArtifact("coreml")
            let target = artifact.meta["deployment_target"]?.string ?? "unknown"
            guard target.hasPrefix("iOS"), let major = Int(target.dropFirst(3)), major >= 18 else {
                throw BundleError("the Core ML artifact targets \(target); Core ML state and multifunction packages need iOS18: re-export with memlora's default target")
            }
            let resident = artifact.files.values.reduce(Int64(0)) { $0 + diskBytes(b.root.appendingPathComponent($1)) }
            let warning = ramWarning(residentBytes: resident)
            ui { self.ramWarning = warning; self.progress = nil }
            let tok = try HFTokenizer(tokenizerJSON: b.tokenizer)
            let e = try await CoreMLEngine.load(bundle: b, artifact: artifact, tokenizer: tok, computeUnits: computeUnits) { msg in
                self.ui { self.status = msg }
            }
            let s = try MemoryStore(try SQLiteDatabase(path: BundlePlaces.store.path))
            bundle = b
            engine = e
            tokenizer = tok
            store = s
            try rebuildLoop()
            try refreshMemories()
            let family = (try? b.model())?["family"]?.string ?? "model"
            ui { self.status = "Ready: \(family) · \(artifact.key) · \(e.adapters.count) functions · retrieval \(s.textSearch)" }
            return nil
        }
    }

    private func rebuildLoop() throws {
        guard let b = bundle, let e = engine, let s = store else { return }
        let u = settings
        func gen(_ n: Int) -> GenerationSettings { GenerationSettings(maxNewTokens: n, temperature: u.temperature) }
        loop = try MemoryLoop(engine: e, store: s, chatFormat: b.chatFormat, templates: try b.templates(),
                              settings: LoopSettings(extract: gen(u.extractTokens), update: gen(u.updateTokens), answer: gen(u.answerTokens),
                                                     updateTopK: u.updateTopK, answerTopK: u.answerTopK))
    }

    /// Copy a folder picked with `.fileImporter` into Documents, then open it.
    func importAndOpen(_ picked: URL) {
        background("import") { [self] in
            let dir = try importBundleFolder(picked) { bytes, name in
                self.ui { self.status = "Importing \(name) (\(bytes / (1024 * 1024)) MB copied)" }
            }
            return { self.openBundle(dir) }
        }
    }

    func updateSettings(_ new: UiSettings) {
        settings = new
        if !busy { try? rebuildLoop() }
    }

    /// One chat step: remember the message (extract -> update), then answer it from memory.
    func send(_ text: String) {
        guard let l = loop else { status = "Open a bundle first."; return }
        chat.append(ChatMessage(fromUser: true, text: text))
        background("chat") { [self] in
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.dateFormat = "yyyy-MM-dd"
            let ingest = try l.ingestTurn([DialogTurn(speaker: user, text: text)], user: user, at: nil, today: f.string(from: Date()))
            ui { self.streaming = "" }
            l.onToken = { piece in self.ui { self.streaming += piece } }
            let answer = try l.answer(text, users: [user])
            l.onToken = nil
            let r = l.traces.last?.result
            var metrics = r.map { String(format: "TTFT %.0f ms · prefill %.1f tok/s · decode %.1f tok/s", $0.ttftMs, $0.prefillTokensPerS, $0.decodeTokensPerS) } ?? ""
            if let r = r, r.stoppedBy == "user" { metrics += " · stopped" }
            if !ingest.errors.isEmpty { metrics += " · \(ingest.errors.count) invalid output item(s) dropped" }
            let last = Array(l.traces.suffix(3))
            ui {
                self.chat.append(ChatMessage(fromUser: false, text: answer.text, metrics: metrics, memoriesUsed: answer.memories.map { $0.text }))
                self.streaming = ""
                self.traces = last
            }
            try refreshMemories()
            return nil
        }
    }

    func stop() { engine?.stop() }

    func refreshMemories() throws {
        guard let s = store else { return }
        let list = try s.list()
        let events = try s.history()
        ui { self.memories = list; self.history = events }
    }

    func delete(_ id: String) { background("delete") { [self] in _ = try store?.delete(id); try refreshMemories(); return nil } }

    func wipe() { background("wipe") { [self] in _ = try store?.wipe(); try refreshMemories(); return nil } }

    /// The store as JSON (memories + history) in Documents, for the share sheet.
    func exportMemories() {
        background("export") { [self] in
            guard let s = store else { return nil }
            let memories = try s.list().map { $0.toJSON() }
            let history = try s.history().map { $0.toJSON() }
            let doc: JSON = ["memories": .array(memories), "history": .array(history)]
            let out = BundlePlaces.documents.appendingPathComponent("memories.json")
            try doc.dumps().write(to: out, atomically: true, encoding: .utf8)
            ui { self.memoriesURL = out; self.status = "Exported to Documents/memories.json" }
            return nil
        }
    }

    /// Run the bundle's conformance vectors on this device (prompts, parse, tokenizer through
    /// swift-transformers, greedy through Core ML); write a JSON report `memlora.device_report` checks.
    func runSelfTest() {
        let unitsName = settings.computeUnits
        background("self-test") { [self] in
            guard let b = bundle, let e = engine else { throw BundleError("open a bundle first") }
            let conf = try Conformance(try b.conformance(), try b.templates())
            let report = try conf.runAll(e, tokenizer)
            let device = await MainActor.run { UIDevice.current.model + " " + UIDevice.current.systemName + " " + UIDevice.current.systemVersion }
            var hw = utsname()
            uname(&hw)
            let machine = withUnsafeBytes(of: &hw.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            let full = conf.report([("device", .string(device)), ("machine", .string(machine)), ("runtime", "coreml"),
                                    ("compute_units", .string(unitsName)), ("bundle_created", b.manifest["created"] ?? .null)])
            let out = BundlePlaces.documents.appendingPathComponent("conformance-report.json")
            try (full.dumps() + "\n").write(to: out, atomically: true, encoding: .utf8)
            var lines: [String] = []
            for (_, s) in conf.sections {
                var line = "\(s.name): " + (s.skipped.map { "skipped (\($0))" } ?? "\(s.total - s.failures.count)/\(s.total) passed")
                for f in s.failures.prefix(3) { line += "\n  - \(f)" }
                lines.append(line)
            }
            let text = lines.joined(separator: "\n") + "\n\npassed: \(report["passed"]?.bool == true)\nreport: Documents/conformance-report.json"
            ui { self.selfTest = text; self.reportURL = out }
            return nil
        }
    }

    private func close() {
        engine?.close(); engine = nil
        store?.close(); store = nil
        loop = nil
        tokenizer = nil
    }
}
