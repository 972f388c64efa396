import Foundation
import XCTest
@testable import MemLoRAKit

#if os(macOS) || os(Linux)
/// The Swift loop on a LoCoMo slice through the exported model equals the Python loop's store.
final class LocomoTests: XCTestCase {
    func testLocomoSliceStoreEqualsPython() throws {
        let py = try readJSON(try Props.file("MEMLORA_PYSTORE"))
        let st = try J.obj(py["settings"], "settings")
        let bundle = try MemLoRABundle.open(try Props.file("MEMLORA_BUNDLE"))
        let engine = try HostEngine(python: try Props.need("MEMLORA_PYTHON"), bundle: bundle.root.path, backend: try J.str(st["backend"], "backend"))
        defer { engine.close() }
        let conv = try Locomo.load(try Props.file("MEMLORA_LOCOMO"))[0]
        XCTAssertEqual(py["sample_id"]?.string, conv.sampleId)
        let gen = GenerationSettings(maxNewTokens: try J.int(st["max_new_tokens"], "max_new_tokens"))
        let store = try memStore()
        let loop = try MemoryLoop(engine: engine, store: store, chatFormat: bundle.chatFormat, templates: try bundle.templates(),
                                  settings: LoopSettings(extract: gen, update: gen, answer: gen, updateTopK: try J.int(st["update_top_k"], "k"),
                                                         answerTopK: try J.int(st["answer_top_k"], "k"), rawFallback: true))
        let turnsPer = Props.int("MEMLORA_TURNS", 8)
        let sessions = Props.int("MEMLORA_SESSIONS", 1)
        let questions = Props.int("MEMLORA_QUESTIONS", 3)
        var turns = 0
        for sess in conv.sessions.prefix(sessions) {
            for t in sess.turns.prefix(turnsPer) {
                _ = try loop.ingestTurn([DialogTurn(speaker: t.speaker, text: t.displayText)], user: conv.sampleId + ":" + t.speaker,
                                        at: sess.date, today: sess.date)
                turns += 1
            }
        }
        XCTAssertEqual(py["turns"]?.int, turns)
        let users = [conv.sampleId + ":" + conv.speakerA, conv.sampleId + ":" + conv.speakerB]
        var answers: [(String, Answer)] = []
        for q in conv.qa.filter({ $0.category != 5 }).prefix(questions) {
            let a = try loop.answer(q.question, users: users)
            answers.append((q.question, a))
        }
        let dump = try StoreDump(store)
        let calls = JSON.array(loop.traces.map { ["op": .string($0.op.rawValue), "raw": .string($0.raw)] })
        let ans = JSON.array(answers.map { ["question": .string($0.0), "text": .string($0.1.text), "memories": .array($0.1.memories.map { .string(dump.ref($0.id)) })] })
        XCTAssertSameJSON(py["calls"], calls, "raw model outputs, call by call")
        XCTAssertSameJSON(py["history"], dump.history, "history")
        XCTAssertSameJSON(py["memories"], dump.memories, "memories")
        XCTAssertSameJSON(py["answers"], ans, "answers")
        XCTAssertGreaterThanOrEqual(dump.memories.array?.count ?? 0, 4, "the slice must fill the store")
    }
}
#endif
