import Foundation

/// Generation settings per operation, retrieval sizes and adapter names (`loop.py` LoopSettings).
public struct LoopSettings {
    public var extract = GenerationSettings(maxNewTokens: 256)
    public var update = GenerationSettings(maxNewTokens: 512)
    public var answer = GenerationSettings(maxNewTokens: 48)
    public var updateTopK = 5
    public var answerTopK = 30
    public var adapters: [Op: String?] = [.extract: "extract", .update: "update", .answer: "answer"]
    /// Store a turn verbatim when the model yields nothing valid (`runtime.ingest(raw_fallback=True)`).
    public var rawFallback = false

    public init() {}

    public init(extract: GenerationSettings, update: GenerationSettings, answer: GenerationSettings,
                updateTopK: Int = 5, answerTopK: Int = 30, rawFallback: Bool = false) {
        self.extract = extract; self.update = update; self.answer = answer
        self.updateTopK = updateTopK; self.answerTopK = answerTopK; self.rawFallback = rawFallback
    }

    public func generation(_ op: Op) -> GenerationSettings {
        switch op {
        case .extract: return extract
        case .update: return update
        case .answer: return answer
        }
    }

    public func adapter(_ op: Op) -> String? { adapters[op] ?? nil }
}

public final class OpStats {
    public var calls = 0
    public var failures = 0
    public var promptTokens = 0
    public var newTokens = 0
    public var prefillMs = 0.0
    public var decodeMs = 0.0
    public var totalMs = 0.0
}

/// What one operation did, for the app's pipeline panel.
public struct StageTrace {
    public let op: Op
    public let adapter: String?
    public let prompt: String
    public let raw: String
    public var errors: [String]
    public let result: GenerationResult
    public let totalMs: Double
}

public struct Answer {
    public let text: String
    public let memories: [Memory]
}

public struct IngestResult {
    public let facts: [String]
    public let applied: [AppliedOp]
    public let errors: [String]
}

public struct LoopError: Error, CustomStringConvertible {
    public let description: String
}

/// Extract / update / answer over one `Engine` and `MemoryStore`, exactly as `memlora/memory/loop.py`
/// (plus `runtime.ingest`'s raw fallback when `LoopSettings.rawFallback` is set).
public final class MemoryLoop {
    public let engine: Engine
    public let store: MemoryStore
    public let chatFormat: String
    public let templates: Templates
    public let settings: LoopSettings
    public private(set) var stats: [Op: OpStats] = [.extract: OpStats(), .update: OpStats(), .answer: OpStats()]
    public private(set) var lastErrors: [String] = []
    public private(set) var lastRaw: [Op: String] = [:]
    /// Every stage run, oldest first (the pipeline panel reads it).
    public private(set) var traces: [StageTrace] = []
    /// Streaming callback for the answer operation.
    public var onToken: ((String) -> Void)?

    public init(engine: Engine, store: MemoryStore, chatFormat: String, templates: Templates,
                settings: LoopSettings = LoopSettings()) throws {
        _ = try Chat.format(chatFormat)
        let missing = Op.allCases.compactMap { settings.adapter($0) }.filter { !engine.adapters.contains($0) }
        if !missing.isEmpty { throw LoopError(description: "engine has adapters \(engine.adapters), missing \(missing)") }
        self.engine = engine; self.store = store; self.chatFormat = chatFormat
        self.templates = templates; self.settings = settings
    }

    private static func ms(since t0: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 }

    private func run(_ op: Op, _ messages: [Message]) throws -> GenerationResult {
        let gen = settings.generation(op)
        var stops: [String] = []
        let formatStops = try Chat.stopStrings(chatFormat)
        for s in gen.stop + formatStops where !stops.contains(s) { stops.append(s) }
        let prompt = try Prompts.render(chatFormat, messages)
        let t0 = DispatchTime.now().uptimeNanoseconds
        let res = try engine.generate(adapter: settings.adapter(op), prompt: prompt, settings: gen.withStop(stops),
                                      onToken: op == .answer ? onToken : nil)
        let ms = MemoryLoop.ms(since: t0)
        let s = stats[op]!
        s.calls += 1
        s.promptTokens += res.promptTokens
        s.newTokens += res.newTokens
        s.prefillMs += res.prefillMs
        s.decodeMs += res.decodeMs
        s.totalMs += ms
        lastRaw[op] = res.text
        traces.append(StageTrace(op: op, adapter: settings.adapter(op), prompt: prompt, raw: res.text, errors: [], result: res, totalMs: ms))
        return res
    }

    private func fail(_ op: Op, _ errors: [String]) {
        if !errors.isEmpty {
            stats[op]!.failures += 1
            traces[traces.count - 1].errors = errors
        }
        lastErrors = errors
    }

    public func extract(_ turns: [DialogTurn], today: String) throws -> ExtractResult {
        let res = try run(.extract, try Prompts.extractMessages(templates, turns, today: today))
        let parsed = Parsing.parseExtract(res.text)
        fail(.extract, parsed.errors)
        return parsed
    }

    /// The union (in retrieval order) of each fact's top-`updateTopK` memories.
    public func retrieveForFacts(_ facts: [String], user: String) throws -> [Memory] {
        var seen = Set<String>()
        var out: [Memory] = []
        for f in facts {
            for hit in try store.search(f, user: user, k: settings.updateTopK) where !seen.contains(hit.memory.id) {
                seen.insert(hit.memory.id)
                out.append(hit.memory)
            }
        }
        return out
    }

    public func update(_ facts: [String], user: String, at: String? = nil) throws -> [AppliedOp] {
        if facts.isEmpty { lastErrors = []; return [] }
        let old = try retrieveForFacts(facts, user: user)
        let idMap = IdMap(old.map { $0.id })
        let shown = old.map { (idMap.short($0.id)!, $0.text) }
        let res = try run(.update, try Prompts.updateMessages(templates, shown, facts))
        let parsed = Parsing.parseUpdate(res.text, idMap)
        fail(.update, parsed.errors)
        return try store.apply(parsed.ops, user: user, at: at).applied
    }

    /// Answer from the top-k memories of one or several users (hits merged best first, stable).
    public func answer(_ question: String, users: [String], k: Int? = nil) throws -> Answer {
        let kk = k ?? settings.answerTopK
        var hits: [SearchHit] = []
        for u in users { hits += try store.search(question, user: u, k: kk) }
        let memories = stableSortedByScore(hits).prefix(kk).map { $0.memory }
        let res = try run(.answer, try Prompts.answerMessages(templates, question, memories.map { ($0.updatedAt, $0.text) }))
        var text = PyText.strip(res.text)
        // `if text.lower().startswith("answer:"): text = text[len("answer:"):].strip()`
        if PyText.lower(text).unicodeScalars.starts(with: "answer:".unicodeScalars) {
            text = PyText.strip(PyText.dropHead(text, 7))
        }
        return Answer(text: text, memories: Array(memories))
    }

    /// Extract facts from `turns` and fold them into `user`'s memories (`runtime.ingest`).
    public func ingestTurn(_ turns: [DialogTurn], user: String, at: String? = nil, today: String) throws -> IngestResult {
        let extracted = try extract(turns, today: today)
        let last = turns[turns.count - 1].text
        let facts = !extracted.facts.isEmpty ? extracted.facts
            : (settings.rawFallback && !PyText.strip(last).isEmpty ? [last] : [])
        var applied = try update(facts, user: user, at: at)
        let errors = extracted.errors + lastErrors
        if settings.rawFallback && applied.isEmpty && !errors.isEmpty {
            applied = try store.apply(facts.map { UpdateOp(.ADD, nil, $0) }, user: user, at: at, actor: "fallback").applied
        }
        return IngestResult(facts: facts, applied: applied, errors: errors)
    }
}
