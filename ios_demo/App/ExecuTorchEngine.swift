import Foundation
import MemLoRAKit

#if canImport(ExecuTorchLLM)
import ExecuTorchLLM

/// Optional engine for fused ExecuTorch bundles (`--backend executorch --adapter-mode fused`): one
/// self-contained `.pte` per adapter through ExecuTorch's `TextRunner`. The iOS runner takes no
/// data files, so external bundles (a shared `foundation.ptd`) are refused: use Core ML on iOS.
/// `reset()` runs before every operation (the KV cache of another adapter is garbage).
/// Built only when the ExecuTorch Swift package is added to the app (see README.md).
final class ExecuTorchEngine: Engine {
    let artifact: BundleArtifact
    let adapters: [String]
    private var runners: [String: TextRunner] = [:]
    private var running: TextRunner?
    private let lock = NSLock()

    init(bundle: MemLoRABundle, artifact: BundleArtifact) throws {
        guard artifact.backend == "executorch" else { throw BundleError("not an ExecuTorch artifact: \(artifact.key)") }
        if artifact.files["foundation"] != nil {
            throw BundleError("this bundle's ExecuTorch programs share foundation.ptd, which TextRunner cannot load; re-export with --adapter-mode fused or use the Core ML artifact")
        }
        self.artifact = artifact
        adapters = artifact.adapters
        for name in artifact.adapters {
            guard let rel = artifact.files["model:\(name)"] ?? artifact.files["adapter:\(name)"] else {
                throw BundleError("artifact \(artifact.key) lists adapter \(name) but no program for it")
            }
            let runner = TextRunner(modelPath: bundle.root.appendingPathComponent(rel).path, tokenizerPath: bundle.tokenizer.path)
            do {
                try runner.load()
            } catch {
                throw BundleError("ExecuTorch could not load \(rel) (\(error.localizedDescription)); re-export with the executorch version this app links")
            }
            runners[name] = runner
        }
    }

    func generate(adapter: String?, prompt: String, settings: GenerationSettings,
                  onToken: ((String) -> Void)?) throws -> GenerationResult {
        guard let name = adapter, let runner = runners[name] else { throw BundleError("no ExecuTorch program for adapter \(adapter ?? "base")") }
        runner.reset()
        lock.lock(); running = runner; lock.unlock()
        defer { lock.lock(); running = nil; lock.unlock() }
        var text = ""
        var emitted = 0
        var pieces = 0
        var stoppedBy = "eos"
        let t0 = DispatchTime.now().uptimeNanoseconds
        var ttft: Double? = nil
        let config = Config {
            $0.sequenceLength = artifact.maxSeqLen ?? 2048
            $0.maximumNewTokens = settings.maxNewTokens
            $0.temperature = settings.temperature
            $0.bosCount = 0  // the chat format already wrote any BOS
            $0.eosCount = 0
        }
        try runner.generate(prompt, config) { piece in
            if stoppedBy == "stop" || stoppedBy == "length" { return }
            if ttft == nil { ttft = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 }
            pieces += 1
            text += piece
            let (cut, hit) = DecodeRules.checkStop(text, settings.stop, from: 0)
            if hit {
                text = cut; stoppedBy = "stop"; runner.stop()
            } else if pieces >= settings.maxNewTokens {
                stoppedBy = "length"; runner.stop()
            }
            // Stream all but a tail that could still begin a stop string.
            let hold = stoppedBy == "eos" ? DecodeRules.heldBack(text, settings.stop) : 0
            let u = Array(text.unicodeScalars)
            let upto = u.count - hold
            if upto > emitted {
                onToken?(PyText.string(u[emitted..<upto]))
                emitted = upto
            }
        }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        return GenerationResult(text: text, tokenIds: [], promptTokens: 0, stoppedBy: stoppedBy,
                                prefillMs: ttft ?? 0, decodeMs: ms - (ttft ?? 0), ttftMs: ttft)
    }

    func stop() {
        lock.lock(); let r = running; lock.unlock()
        r?.stop()
    }

    func close() { runners.removeAll() }
}
#endif
