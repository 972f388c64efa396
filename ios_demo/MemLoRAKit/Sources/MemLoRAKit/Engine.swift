import Foundation

public struct SettingsError: Error, CustomStringConvertible {
    public let description: String
}

/// How to generate (`engine.py` GenerationSettings). `eosIds` nil: the engine's own eos set.
public struct GenerationSettings {
    public let maxNewTokens: Int
    public let temperature: Double
    public let topP: Double
    public let seed: UInt64?
    public let stop: [String]
    public let eosIds: [Int]?

    public init(maxNewTokens: Int = 256, temperature: Double = 0, topP: Double = 1, seed: UInt64? = 0,
                stop: [String] = [], eosIds: [Int]? = nil) {
        precondition(maxNewTokens >= 1, "maxNewTokens must be >= 1, got \(maxNewTokens)")
        precondition(temperature >= 0, "temperature must be >= 0, got \(temperature)")
        precondition(topP > 0 && topP <= 1, "topP must be in (0, 1], got \(topP)")
        precondition(stop.allSatisfy { !$0.isEmpty }, "stop strings must be non-empty")
        self.maxNewTokens = maxNewTokens; self.temperature = temperature; self.topP = topP
        self.seed = seed; self.stop = stop; self.eosIds = eosIds
    }

    public func withStop(_ s: [String]) -> GenerationSettings {
        GenerationSettings(maxNewTokens: maxNewTokens, temperature: temperature, topP: topP, seed: seed, stop: s, eosIds: eosIds)
    }

    public func toJSON() -> JSON {
        ["max_new_tokens": JSON(maxNewTokens), "temperature": JSON(temperature), "top_p": JSON(topP),
         "seed": seed.map { JSON.int(Int64($0)) } ?? JSON.null, "stop": JSON(stop), "eos_ids": eosIds.map { JSON($0) } ?? JSON.null]
    }
}

/// One completion. Times in milliseconds; `tokenIds` empty where the runtime does not expose them.
public struct GenerationResult {
    public let text: String
    public let tokenIds: [Int]
    public let promptTokens: Int
    public let stoppedBy: String
    public let prefillMs: Double
    public let decodeMs: Double
    public let ttftMs: Double

    public init(text: String, tokenIds: [Int], promptTokens: Int, stoppedBy: String, prefillMs: Double, decodeMs: Double,
                ttftMs: Double? = nil) {
        self.text = text; self.tokenIds = tokenIds; self.promptTokens = promptTokens; self.stoppedBy = stoppedBy
        self.prefillMs = prefillMs; self.decodeMs = decodeMs; self.ttftMs = ttftMs ?? prefillMs
    }

    public var newTokens: Int { tokenIds.count }
    public var decodeTokensPerS: Double { decodeMs > 0 ? Double(newTokens) * 1000 / decodeMs : 0 }
    public var prefillTokensPerS: Double { prefillMs > 0 ? Double(promptTokens) * 1000 / prefillMs : 0 }
}

/// A text generator over one shared base with switchable adapters: Core ML functions (or
/// ExecuTorch programs) on the phone, a JSON-lines Python process in the host tests, canned
/// outputs in the fixture tests. An implementation must drop its KV cache before every call (a
/// cache filled under one adapter is garbage under another), cut the text at the first stop
/// string, and call `onToken` with each new piece of text.
public protocol Engine: AnyObject {
    var adapters: [String] { get }
    func generate(adapter: String?, prompt: String, settings: GenerationSettings,
                  onToken: ((String) -> Void)?) throws -> GenerationResult
    /// Ask a running `generate` to finish early (from another thread).
    func stop()
    func close()
}

public extension Engine {
    func stop() {}
    func close() {}
}

/// Optional access to the engine's tokenizer (Core ML's engine has one; ExecuTorch's runner does not expose it).
public protocol TokenizerAccess: AnyObject {
    func encode(_ text: String) throws -> [Int]
    func decode(_ ids: [Int]) throws -> String
}

public struct ScriptError: Error, CustomStringConvertible {
    public let description: String
}

/// Replays canned outputs in call order (the app fixture's model), recording every prompt.
public final class ScriptedEngine: Engine {
    public var outputs: [String]
    public let adapters: [String]
    public private(set) var prompts: [(adapter: String?, prompt: String)] = []

    public init(_ outputs: [String], adapters: [String] = ["extract", "update", "answer"]) {
        self.outputs = outputs
        self.adapters = adapters
    }

    public func generate(adapter: String?, prompt: String, settings: GenerationSettings,
                         onToken: ((String) -> Void)?) throws -> GenerationResult {
        prompts.append((adapter, prompt))
        if outputs.isEmpty { throw ScriptError(description: "scripted engine: no canned output left for call \(prompts.count) (\(adapter ?? "base"))") }
        var text = outputs.removeFirst()
        var stoppedBy = "length"
        for s in settings.stop {  // `text[:text.index(s)]`, in code points
            if let i = PyText.find(Array(text.unicodeScalars), Array(s.unicodeScalars)) {
                text = PyText.head(text, i); stoppedBy = "stop"
            }
        }
        onToken?(text)
        return GenerationResult(text: text, tokenIds: [], promptTokens: 0, stoppedBy: stoppedBy, prefillMs: 0, decodeMs: 0)
    }
}

/// The decode loop's text rules, shared by the app's engines (`engine.py` `_check_stop`,
/// `_held_back`, `_fit_prompt`, `eos_ids_for`), so every engine cuts and streams as Python does.
public enum DecodeRules {
    public static let eosNames = ["</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "<end_of_turn>"]

    /// Cut `text` at the earliest stop string found at or after code point `start`.
    public static func checkStop(_ text: String, _ stop: [String], from start: Int) -> (String, Bool) {
        let u = Array(text.unicodeScalars)
        var best: Int? = nil
        for s in stop {
            if let i = PyText.find(u, Array(s.unicodeScalars), from: start) { best = min(best ?? i, i) }
        }
        guard let cut = best else { return (text, false) }
        return (PyText.string(u[0..<cut]), true)
    }

    /// How many trailing code points of `text` could begin a stop string (not streamed yet).
    public static func heldBack(_ text: String, _ stop: [String]) -> Int {
        let u = Array(text.unicodeScalars)
        var best = 0
        for s in stop {
            let su = Array(s.unicodeScalars)
            var k = su.count - 1
            while k >= 1 {
                if k > best && u.count >= k && Array(u[(u.count - k)...]) == Array(su[0..<k]) { best = k }
                k -= 1
            }
        }
        return best
    }

    /// (ids, tokens dropped from the left, new-token budget) within `maxSeqLen`.
    public static func fitPrompt(_ ids: [Int], maxSeqLen: Int?, maxNew: Int, keepFirst: Bool) -> ([Int], Int, Int) {
        guard let n = maxSeqLen else { return (ids, 0, maxNew) }
        let reserve = min(maxNew, max(1, n / 4))
        let limit = n - reserve
        var out = ids
        var dropped = 0
        if ids.count > limit {
            dropped = ids.count - limit
            let head = keepFirst ? Array(ids.prefix(1)) : []
            out = head + Array(ids[(head.count + dropped)...])
        }
        return (out, dropped, min(maxNew, n - out.count))
    }

    /// Greedy or nucleus sampling from `logits` (`engine.py` `sample`). Greedy is exact; with
    /// temperature > 0 the draw uses `rng`, not NumPy's generator, so seeds do not reproduce Python's.
    public static func sample(_ logits: [Float], temperature: Double, topP: Double, rng: inout SplitMix64) -> Int {
        if temperature == 0 {
            var best = 0
            var bestV = -Float.infinity
            for (i, v) in logits.enumerated() where !v.isNaN && v > bestV {
                best = i; bestV = v
            }
            return best
        }
        let z = logits.map { $0.isFinite ? Double($0) / temperature : -Double.infinity }
        let m = z.max() ?? 0
        var p = z.map { exp($0 - m) }
        let sum = p.reduce(0, +)
        p = p.map { $0 / sum }
        var order = Array(p.indices).sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
        if topP < 1 {
            var cum = 0.0
            var keep = order.count
            for (j, i) in order.enumerated() {
                cum += p[i]
                if cum >= topP { keep = j + 1; break }
            }
            order = Array(order.prefix(keep))
        }
        let total = order.reduce(0.0) { $0 + p[$1] }
        var r = rng.nextDouble() * total
        for i in order {
            r -= p[i]
            if r <= 0 { return i }
        }
        return order.last ?? 0
    }
}

/// A small seeded generator (sampling at temperature > 0).
public struct SplitMix64 {
    private var s: UInt64
    public init(seed: UInt64) { s = seed }
    public mutating func next() -> UInt64 {
        s &+= 0x9E37_79B9_7F4A_7C15
        var z = s
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
