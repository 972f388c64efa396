import Foundation
import XCTest
@testable import MemLoRAKit

/// The shared app fixture (`python -m memlora.app_fixture`): scripted conversation, same store.
final class FixtureTests: XCTestCase {
    func testScriptedConversationReproducesThePythonLoop() throws {
        let dir = try Props.file("MEMLORA_FIXTURE")
        let doc = try readJSON(dir.appendingPathComponent("conversation.json"))
        XCTAssertEqual(doc["format"], "memlora-app-fixture")
        XCTAssertEqual(doc["version"], 1)
        let templates = try Prompts.load(dir.appendingPathComponent(try J.str(doc["prompts"], "prompts")))
        let store = try memStore()
        XCTAssertEqual(doc["text_search"]?.string, store.textSearch)
        let s = try J.obj(doc["settings"], "settings")
        let dump = try StoreDump(store)
        for (i, stepAny) in try J.list(doc["steps"], "steps").enumerated() {
            let step = try J.obj(stepAny, "step")
            let exp = try J.obj(step["expected"], "expected")
            let engineStep = ScriptedEngine(try J.strs(step["outputs"], "outputs"))
            var settings = LoopSettings()
            settings.updateTopK = try J.int(s["update_top_k"], "k")
            settings.answerTopK = try J.int(s["answer_top_k"], "k")
            settings.rawFallback = step["raw_fallback"]?.bool == true
            let loop = try MemoryLoop(engine: engineStep, store: store, chatFormat: try J.str(doc["chat_format"], "chat_format"),
                                      templates: templates, settings: settings)
            var got = JSONObject()
            if step["kind"]?.string == "ingest" {
                let turns = try J.list(step["turns"], "turns").map {
                    let t = try J.obj($0, "turn"); return DialogTurn(speaker: try J.str(t["speaker"], "s"), text: try J.str(t["text"], "t"))
                }
                let res = try loop.ingestTurn(turns, user: try J.str(step["user"], "user"), at: step["at"]?.string,
                                              today: try J.str(step["today"], "today"))
                got["facts"] = JSON(res.facts)
                got["n_errors"] = JSON(res.errors.count)
                got["applied"] = .array(res.applied.map {
                    ["event": .string($0.event.rawValue), "memory": .string(dump.ref($0.memoryId)), "old_text": JSON($0.oldText),
                     "new_text": JSON($0.newText)]
                })
            } else {
                let k = step["k"].flatMap { $0.isNull ? nil : $0.int }
                let ans = try loop.answer(try J.str(step["question"], "q"), users: try J.strs(step["users"], "users"), k: k)
                got["text"] = .string(ans.text)
                got["memories"] = .array(ans.memories.map { .string(dump.ref($0.id)) })
            }
            got["calls"] = .array(engineStep.prompts.enumerated().map {
                ["op": .string(loop.traces[$0.offset].op.rawValue), "adapter": JSON($0.element.adapter), "prompt": .string($0.element.prompt)]
            })
            for (key, v) in exp.pairs { XCTAssertSameJSON(v, got[key], "step \(i) (\(key))") }
        }
        let final = try J.obj(doc["expected_store"], "expected_store")
        let mine = try StoreDump(store)
        // refs must agree with the ones assigned while running (creation order)
        for (id, r) in dump.refs { XCTAssertEqual(mine.ref(id), r) }
        XCTAssertSameJSON(final["history"], mine.history, "history")
        XCTAssertSameJSON(final["memories"], mine.memories, "memories")
    }
}

final class ChatRenderFixtureTests: XCTestCase {
    /// Every chat format renders the fixture's messages as Python does (system folding for gemma,
    /// role renames, markers stripped repeatedly).
    func testEveryChatFormatRendersLikePython() throws {
        let doc = try readJSON(try Props.file("MEMLORA_FIXTURE").appendingPathComponent("conversation.json"))
        let cases = try J.list(doc["chat_render"], "chat_render")
        XCTAssertEqual(cases.count, Chat.formats.count)
        for c in cases {
            let o = try J.obj(c, "chat_render[]")
            let msgs = try J.list(o["messages"], "messages").map {
                let m = try J.obj($0, "m"); return Message(role: try J.str(m["role"], "role"), content: try J.str(m["content"], "content"))
            }
            let want = try J.str(o["text"], "text")
            let got = try Chat.render(try J.str(o["format"], "format"), msgs)
            XCTAssertSameText(want, got, (o["format"] ?? .null).dumps())
        }
    }
}
