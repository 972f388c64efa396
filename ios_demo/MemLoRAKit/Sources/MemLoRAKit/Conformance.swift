import Foundation

public final class SectionResult {
    public let name: String
    public var total = 0
    public var failures: [String] = []
    public var skipped: String?

    public init(_ name: String) { self.name = name }

    public var passed: Bool { skipped == nil && failures.isEmpty }

    public func check(_ ok: Bool, _ what: @autoclosure () -> String) {
        total += 1
        if !ok { failures.append(what()) }
    }

    public func toJSON() -> JSON {
        ["total": JSON(total), "failed": JSON(failures.count), "passed": .bool(failures.isEmpty),
         "skipped": JSON(skipped), "failures": JSON(Array(failures.prefix(20)))]
    }
}

/// Runs every section of a bundle's `conformance.json` (`memlora/conformance.py`) against this
/// core: rendered prompts byte-equal, every parse case, greedy prefixes through an `Engine`, and
/// tokenizer ids where the engine exposes its tokenizer. The app's self-test writes `report()`,
/// which `python -m memlora.device_report` checks on the host (the same check as Android's).
public final class Conformance {
    private let doc: JSONObject
    private let templates: Templates
    public let chatFormat: String
    public private(set) var sections: [(String, SectionResult)] = []

    public init(_ doc: JSONObject, _ templates: Templates) throws {
        if doc["format"]?.string != "memlora-conformance" { throw BundleError("not a memlora conformance file") }
        let v = doc["version"]?.int ?? 0
        if v != 1 { throw BundleError("conformance version \(v) not supported (this core reads 1)") }
        self.doc = doc
        self.templates = templates
        chatFormat = try J.str(doc["chat_format"], "conformance chat_format")
    }

    private func record(_ r: SectionResult) -> SectionResult {
        sections.removeAll { $0.0 == r.name }
        sections.append((r.name, r))
        return r
    }

    private static func pairs(_ v: JSON?, _ what: String) throws -> [(String, String)] {
        try J.list(v, what).map { let p = try J.strs($0, what + "[]"); return (p[0], p[1]) }
    }

    /// The prompt text the loop renders for one `prompts[].case`.
    public func promptFor(_ c: JSONObject) throws -> String {
        let messages: [Message]
        switch try Op.of(try J.str(c["op"], "case.op")) {
        case .extract:
            let turns = try J.list(c["turns"], "turns").map {
                let t = try J.obj($0, "turn"); return DialogTurn(speaker: try J.str(t["speaker"], "speaker"), text: try J.str(t["text"], "text"))
            }
            messages = try Prompts.extractMessages(templates, turns, today: try J.str(c["today"], "today"))
        case .update:
            messages = try Prompts.updateMessages(templates, try Conformance.pairs(c["old_memory"], "old_memory"), try J.strs(c["facts"], "facts"))
        case .answer:
            messages = try Prompts.answerMessages(templates, try J.str(c["question"], "question"), try Conformance.pairs(c["memories"], "memories"))
        }
        return try Prompts.render(chatFormat, messages)
    }

    @discardableResult
    public func runPrompts(_ tok: TokenizerAccess? = nil) throws -> SectionResult {
        let r = SectionResult("prompts")
        for (i, item) in try J.list(doc["prompts"], "prompts").enumerated() {
            let p = try J.obj(item, "prompts[]")
            let want = try J.str(p["text"], "text")
            let got = try promptFor(try J.obj(p["case"], "case"))
            r.check(PyText.same(got, want), "prompts[\(i)]: rendered text differs at code point \(Conformance.firstDiff(got, want))")
            if let t = tok { r.check(try t.encode(got) == J.ints(p["ids"], "ids"), "prompts[\(i)]: token ids differ") }
        }
        return record(r)
    }

    @discardableResult
    public func runParse() throws -> SectionResult {
        let r = SectionResult("parse")
        for (i, item) in try J.list(doc["parse"], "parse").enumerated() {
            let c = try J.obj(item, "parse[]")
            let raw = try J.str(c["raw"], "raw")
            let exp = try J.obj(c["expected"], "expected")
            let nErrors = try J.int(exp["n_errors"], "n_errors")
            if c["op"]?.string == "extract" {
                let res = Parsing.parseExtract(raw)
                let want = exp["facts"] ?? .null
                r.check(PyText.same(JSON(res.facts).dumps(), want.dumps()) && res.errors.count == nErrors,
                        "parse[\(i)] (extract): got facts \(JSON(res.facts).dumps()) with \(res.errors.count) errors, expected \(want.dumps()) with \(nErrors)")
            } else {
                let res = Parsing.parseUpdate(raw, IdMap(try J.strs(exp["memory_ids"], "memory_ids")))
                let got = JSON.array(res.ops.map {
                    ["event": .string($0.event.rawValue), "id": JSON($0.id), "text": .string($0.text), "old_memory": JSON($0.oldMemory)]
                })
                let want = exp["ops"] ?? .null
                r.check(PyText.same(got.dumps(), want.dumps()) && res.errors.count == nErrors,
                        "parse[\(i)] (update): got \(got.dumps()) with \(res.errors.count) errors, expected \(want.dumps()) with \(nErrors)")
            }
        }
        return record(r)
    }

    @discardableResult
    public func runTokenizer(_ tok: TokenizerAccess?) throws -> SectionResult {
        let r = SectionResult("tokenizer")
        guard let t = tok else { r.skipped = "engine does not expose its tokenizer"; return record(r) }
        for (i, item) in try J.list(doc["tokenizer"], "tokenizer").enumerated() {
            let s = try J.obj(item, "tokenizer[]")
            let ids = try t.encode(try J.str(s["text"], "text"))
            let want = try J.ints(s["ids"], "ids")
            r.check(ids == want, "tokenizer[\(i)]: ids differ")
            let decoded = try t.decode(ids)
            r.check(PyText.same(decoded, try J.str(s["decoded"], "decoded")), "tokenizer[\(i)]: decoded text differs")
        }
        return record(r)
    }

    /// Greedy prefixes: exactly n argmax tokens, no stop rule. Ids compared where the engine
    /// returns them, else the decoded text.
    @discardableResult
    public func runGreedy(_ engine: Engine, _ tok: TokenizerAccess? = nil) throws -> SectionResult {
        let r = SectionResult("greedy")
        for (i, item) in try J.list(doc["greedy"], "greedy").enumerated() {
            let g = try J.obj(item, "greedy[]")
            let adapter = try J.str(g["adapter"], "adapter")
            let wantIds = try J.ints(g["ids"], "ids")
            let prompt = try promptFor(try J.obj(g["case"], "case"))
            if let t = tok { r.check(try t.encode(prompt) == J.ints(g["prompt_ids"], "prompt_ids"), "greedy[\(i)] (\(adapter)): prompt ids differ") }
            let res = try engine.generate(adapter: adapter, prompt: prompt,
                                          settings: GenerationSettings(maxNewTokens: wantIds.count, temperature: 0, stop: [], eosIds: []),
                                          onToken: nil)
            if !res.tokenIds.isEmpty {
                r.check(res.tokenIds == wantIds, "greedy[\(i)] (\(adapter)): ids \(res.tokenIds) != \(wantIds)")
            } else {
                let want = try J.str(g["text"], "text")
                r.check(PyText.same(res.text, want), "greedy[\(i)] (\(adapter)): text \(JSON.quote(res.text)) != \(JSON.quote(want))")
            }
        }
        return record(r)
    }

    @discardableResult
    public func runAll(_ engine: Engine?, _ tok: TokenizerAccess?) throws -> JSON {
        try runTokenizer(tok)
        try runPrompts(tok)
        try runParse()
        if let e = engine { try runGreedy(e, tok) } else {
            let r = SectionResult("greedy"); r.skipped = "no engine"; _ = record(r)
        }
        return report()
    }

    /// The JSON report the app writes (`memlora-conformance-report`).
    public func report(_ extra: [(String, JSON)] = []) -> JSON {
        var out = JSONObject()
        out["format"] = "memlora-conformance-report"
        out["version"] = 1
        out["chat_format"] = .string(chatFormat)
        out["passed"] = .bool(sections.allSatisfy { $0.1.passed || $0.1.skipped != nil } && sections.contains { $0.1.passed })
        var secs = JSONObject()
        for (k, v) in sections { secs[k] = v.toJSON() }
        out["sections"] = .object(secs)
        for (k, v) in extra { out[k] = v }
        return .object(out)
    }

    static func firstDiff(_ a: String, _ b: String) -> Int {
        let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
        let n = min(x.count, y.count)
        for i in 0..<n where x[i] != y[i] { return i }
        return n
    }
}
