import CoreML
import Foundation
import MemLoRAKit

/// The feature names of the exported Core ML functions, read from the bundle's manifest
/// (`artifacts[].meta.io`, written by `memlora export --backend coreml`), never hard-coded, and
/// checked against each loaded model's own description.
struct CoreMLIO {
    let inputIds: String
    let positionIds: String
    let causalMask: String
    let logits: String
    let states: [String]

    init(_ meta: JSONObject) throws {
        guard let io = meta["io"]?.object else {
            throw BundleError("the Core ML artifact does not record its feature names (manifest meta.io); re-export with a memlora that writes them")
        }
        func name(_ key: String) throws -> String {
            guard let v = io[key]?.string, !v.isEmpty else { throw BundleError("manifest meta.io.\(key) missing; re-run memlora export") }
            return v
        }
        inputIds = try name("input_ids")
        positionIds = try name("position_ids")
        causalMask = try name("causal_mask")
        logits = try name("logits")
        states = try J.strs(io["states"], "meta.io.states")
        if io["mask"]?.string != "additive" {
            throw BundleError("manifest meta.io.mask is \((io["mask"] ?? .null).dumps()), this app builds additive masks; update the app")
        }
    }

    /// The model must take exactly these inputs and state, and give these logits.
    func check(_ model: MLModel, function: String) throws {
        let d = model.modelDescription
        let inputs = Set(d.inputDescriptionsByName.keys)
        let want = Set([inputIds, positionIds, causalMask])
        if inputs != want {
            throw BundleError("Core ML function \(function) takes inputs \(inputs.sorted()), the manifest says \(want.sorted()); re-run memlora export")
        }
        if d.outputDescriptionsByName[logits] == nil {
            throw BundleError("Core ML function \(function) has no output \(logits) (it has \(d.outputDescriptionsByName.keys.sorted()))")
        }
        let states = Set(d.stateDescriptionsByName.keys)
        if states != Set(self.states) {
            throw BundleError("Core ML function \(function) keeps state \(states.sorted()), the manifest says \(self.states.sorted())")
        }
    }
}

/// The Core ML engine: the bundle's multifunction `.mlpackage` (external adapters: one function
/// per adapter plus `base`, the base weights stored once) compiled once and loaded once per
/// adapter function with `MLModelConfiguration.functionName`; fused bundles have one package per
/// adapter. Each operation gets a fresh `makeState()` (the KV cache is Core ML state: a cache
/// filled under one adapter is garbage under another), prefills the prompt, then decodes token by
/// token exactly as `memlora/memory/engine.py` `generate` does (same eos, stop-string, streaming
/// and prompt-fitting rules), greedy at temperature 0.
final class CoreMLEngine: Engine {
    let artifact: BundleArtifact
    let tokenizer: HFTokenizer
    let adapters: [String]
    private let io: CoreMLIO
    private var models: [String: MLModel] = [:]
    private var states: [String: MLState] = [:]
    private let eos: Set<Int>
    private let lock = NSLock()
    private var stopRequested = false
    /// Prefill at most this many tokens per prediction: the export returns logits for every
    /// position ([1, T, vocab]), so a long prompt in one call would allocate T x vocab floats.
    let prefillChunk: Int

    /// Metrics of the last call.
    private(set) var lastResult: GenerationResult?

    /// Compile the package(s) (cached next to the bundle) and load one model per adapter function.
    static func load(bundle: MemLoRABundle, artifact: BundleArtifact, tokenizer: HFTokenizer,
                     computeUnits: MLComputeUnits? = nil, progress: ((String) -> Void)? = nil) async throws -> CoreMLEngine {
        guard artifact.backend == "coreml" else { throw BundleError("not a Core ML artifact: \(artifact.key)") }
        let io = try CoreMLIO(artifact.meta)
        // fp32 exports exist to check numerics: CPU keeps them fp32. fp16 runs where Core ML chooses (ANE/GPU).
        let units = computeUnits ?? ((artifact.meta["precision"]?.string ?? "fp16") == "fp32" ? .cpuOnly : .all)
        var compiled: [String: URL] = [:]
        func compiledURL(_ rel: String) async throws -> URL {
            if let have = compiled[rel] { return have }
            let src = bundle.root.appendingPathComponent(rel)
            let cache = bundle.root.appendingPathComponent(".compiled", isDirectory: true)
            try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
            // Keyed by the package's content (the manifest's sha256 of each of its files), so a
            // re-exported bundle copied over the old one is compiled again.
            var h = SHA256Hasher()
            for f in try bundle.files() where f.path.hasPrefix(rel + "/") { h.update(Data((f.path + f.sha256).utf8)) }
            let tag = String(h.finalizeHex().prefix(12))
            let dst = cache.appendingPathComponent(src.deletingPathExtension().lastPathComponent + "-" + tag + ".mlmodelc")
            if !FileManager.default.fileExists(atPath: dst.path) {
                progress?("Compiling \(rel) ...")
                let tmp = try await MLModel.compileModel(at: src)
                try? FileManager.default.removeItem(at: dst)
                try FileManager.default.moveItem(at: tmp, to: dst)
            }
            compiled[rel] = dst
            return dst
        }
        var models: [String: MLModel] = [:]
        let functions = artifact.meta["functions"]?.object
        for name in artifact.adapters {
            let config = MLModelConfiguration()
            config.computeUnits = units
            let url: URL
            let label: String
            if artifact.adapterMode == "external" {
                guard let rel = artifact.files["model"], let fn = functions?[name]?.string else {
                    throw BundleError("artifact \(artifact.key) lists adapter \(name) but no package function for it; re-run memlora export")
                }
                url = try await compiledURL(rel)
                config.functionName = fn
                label = "\(rel)#\(fn)"
            } else {
                guard let rel = artifact.files["model:\(name)"] else {
                    throw BundleError("artifact \(artifact.key) lists adapter \(name) but no package for it; re-run memlora export")
                }
                url = try await compiledURL(rel)
                label = rel
            }
            progress?("Loading \(label) ...")
            let model: MLModel
            do {
                model = try await MLModel.load(contentsOf: url, configuration: config)
            } catch {
                throw BundleError("Core ML could not load \(label) (\(error.localizedDescription)); this needs iOS 18 and a bundle exported for iOS18")
            }
            try io.check(model, function: label)
            models[name] = model
        }
        return CoreMLEngine(artifact: artifact, tokenizer: tokenizer, io: io, models: models)
    }

    private init(artifact: BundleArtifact, tokenizer: HFTokenizer, io: CoreMLIO, models: [String: MLModel]) {
        self.artifact = artifact
        self.tokenizer = tokenizer
        self.io = io
        self.models = models
        self.adapters = artifact.adapters
        eos = Set(tokenizer.eosIds(stop: []))
        var vocab = 0
        if let m = models.values.first, let shape = m.modelDescription.outputDescriptionsByName[io.logits]?.multiArrayConstraint?.shape,
           let last = shape.last?.intValue {
            vocab = last
        }
        // 64 MiB of fp32 logits per prefill call at most (the whole prompt when the vocabulary is small).
        prefillChunk = vocab > 0 ? max(16, (64 << 20) / (4 * vocab)) : 128
    }

    func stop() {
        lock.lock(); stopRequested = true; lock.unlock()
    }

    private var shouldStop: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopRequested
    }

    func close() {
        states.removeAll()
        models.removeAll()
    }

    // MARK: one operation

    func generate(adapter: String?, prompt: String, settings: GenerationSettings,
                  onToken: ((String) -> Void)?) throws -> GenerationResult {
        guard let name = adapter, let model = models[name] else {
            throw BundleError("no Core ML function for adapter \(adapter ?? "base") (have \(adapters))")
        }
        lock.lock(); stopRequested = false; lock.unlock()
        // A fresh state before every operation: the cache of another adapter (or call) is garbage.
        let state = model.makeState()
        states[name] = state
        let eosIds: Set<Int> = settings.eosIds.map { Set($0) } ?? eos.union(tokenizer.eosIds(stop: settings.stop))
        var ids = tokenizer.encode(prompt)
        if ids.isEmpty { throw BundleError("empty prompt") }
        let (fitted, _, budget) = DecodeRules.fitPrompt(ids, maxSeqLen: artifact.maxSeqLen, maxNew: settings.maxNewTokens,
                                                        keepFirst: tokenizer.isSpecial(ids[0]))
        ids = fitted
        let maxStop = settings.stop.map { $0.unicodeScalars.count }.max() ?? 0
        var rng = SplitMix64(seed: settings.seed ?? UInt64(Date().timeIntervalSince1970 * 1e6))

        let t0 = DispatchTime.now().uptimeNanoseconds
        var pos = 0
        var logits: [Float] = []
        var start = 0
        while start < ids.count {
            let end = min(ids.count, start + prefillChunk)
            logits = try step(model, state, Array(ids[start..<end]), past: pos)
            pos += end - start
            start = end
        }
        let t1 = DispatchTime.now().uptimeNanoseconds
        var out: [Int] = []
        var text = ""
        var emitted = ""
        var stoppedBy = budget == settings.maxNewTokens ? "length" : "context"
        var ttft: Double? = nil

        func emit(upto: Int, final: Bool) {
            let u = Array(text.unicodeScalars)
            let partial = !final && upto >= 1 && upto <= u.count && u[upto - 1] == "\u{FFFD}"
            let e = emitted.unicodeScalars.count
            if u.starts(with: emitted.unicodeScalars) && upto > e && !partial {  // code points, as Python
                onToken?(PyText.string(u[e..<upto]))
                emitted = PyText.string(u[0..<upto])
            }
        }

        while out.count < budget {
            if shouldStop { stoppedBy = "user"; break }
            let tok = DecodeRules.sample(logits, temperature: settings.temperature, topP: settings.topP, rng: &rng)
            if ttft == nil { ttft = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 }
            if eosIds.contains(tok) { stoppedBy = "eos"; break }
            out.append(tok)
            let (cut, hit) = DecodeRules.checkStop(tokenizer.decode(out), settings.stop,
                                                   from: max(0, text.unicodeScalars.count - maxStop))
            text = cut
            if hit { stoppedBy = "stop"; break }
            emit(upto: text.unicodeScalars.count - DecodeRules.heldBack(text, settings.stop), final: false)
            if out.count < budget {
                logits = try step(model, state, [tok], past: pos)
                pos += 1
            }
        }
        emit(upto: text.unicodeScalars.count, final: true)
        let t2 = DispatchTime.now().uptimeNanoseconds
        let res = GenerationResult(text: text, tokenIds: out, promptTokens: ids.count, stoppedBy: stoppedBy,
                                   prefillMs: Double(t1 - t0) / 1e6, decodeMs: Double(t2 - t1) / 1e6, ttftMs: ttft)
        lastResult = res
        return res
    }

    /// One prediction: `tokens` after `past` cached ones; returns the last position's logits.
    private func step(_ model: MLModel, _ state: MLState, _ tokens: [Int], past: Int) throws -> [Float] {
        let n = tokens.count
        if let cap = artifact.maxSeqLen, past + n > cap {
            throw BundleError("context full: \(past) cached + \(n) new tokens > max_seq_len \(cap); export with a larger --max-seq-len")
        }
        let inputIds = try MLMultiArray(shape: [1, NSNumber(value: n)], dataType: .int32)
        let positions = try MLMultiArray(shape: [1, NSNumber(value: n)], dataType: .int32)
        let mask = try MLMultiArray(shape: [1, 1, NSNumber(value: n), NSNumber(value: past + n)], dataType: .float32)
        inputIds.withUnsafeMutableBufferPointer(ofType: Int32.self) { p, _ in
            for i in 0..<n { p[i] = Int32(tokens[i]) }
        }
        positions.withUnsafeMutableBufferPointer(ofType: Int32.self) { p, _ in
            for i in 0..<n { p[i] = Int32(past + i) }
        }
        // `make_causal_mask(past, n)`: 0 where key k <= query q (q = past + row), -inf elsewhere.
        mask.withUnsafeMutableBufferPointer(ofType: Float.self) { p, strides in
            let rowStride = strides[2], colStride = strides[3]
            for r in 0..<n {
                for k in 0..<(past + n) { p[r * rowStride + k * colStride] = k <= past + r ? 0 : -Float.infinity }
            }
        }
        let features = try MLDictionaryFeatureProvider(dictionary: [
            io.inputIds: MLFeatureValue(multiArray: inputIds),
            io.positionIds: MLFeatureValue(multiArray: positions),
            io.causalMask: MLFeatureValue(multiArray: mask),
        ])
        let result = try model.prediction(from: features, using: state)
        guard let logits = result.featureValue(for: io.logits)?.multiArrayValue else {
            throw BundleError("Core ML returned no \(io.logits)")
        }
        return CoreMLEngine.lastRow(logits)
    }

    /// `logits[0, -1, :]` of a [1, T, V] array, whatever its strides and float type.
    static func lastRow(_ a: MLMultiArray) -> [Float] {
        let shape = a.shape.map { $0.intValue }
        let strides = a.strides.map { $0.intValue }
        let v = shape[shape.count - 1]
        let t = shape.count >= 2 ? shape[shape.count - 2] : 1
        let base = shape.count >= 2 ? (t - 1) * strides[strides.count - 2] : 0
        let vs = strides[strides.count - 1]
        var out = [Float](repeating: 0, count: v)
        switch a.dataType {
        case .float32:
            a.withUnsafeBufferPointer(ofType: Float.self) { p in for i in 0..<v { out[i] = p[base + i * vs] } }
        #if arch(arm64)
        case .float16:
            a.withUnsafeBufferPointer(ofType: Float16.self) { p in for i in 0..<v { out[i] = Float(p[base + i * vs]) } }
        #endif
        default:
            var idx = [NSNumber](repeating: 0, count: shape.count)
            if shape.count >= 2 { idx[shape.count - 2] = NSNumber(value: t - 1) }
            for i in 0..<v {
                idx[shape.count - 1] = NSNumber(value: i)
                out[i] = a[idx].floatValue
            }
        }
        return out
    }
}
