package memlora.core

import org.junit.Assert.assertEquals
import org.junit.Test
import java.io.File

/** The shared app fixture (`python -m memlora.app_fixture`): scripted conversation, same store. */
class FixtureTest {
    @Test fun scriptedConversationReproducesThePythonLoop() {
        val dir = Props.file("memlora.fixture")
        val doc = J.obj(Json.parse(File(dir, "conversation.json").readText(Charsets.UTF_8)), "fixture")
        assertEquals("memlora-app-fixture", doc["format"])
        assertEquals(1L, doc["version"])
        val templates = Prompts.load(File(dir, J.str(doc["prompts"], "prompts")))
        val store = memStore()
        assertEquals(doc["text_search"], store.textSearch)
        val s = J.obj(doc["settings"], "settings")
        val engine = ScriptedEngine(ArrayList())
        val dump = StoreDump(store)
        for ((i, stepAny) in J.list(doc["steps"], "steps").withIndex()) {
            val step = J.obj(stepAny, "step")
            val exp = J.obj(step["expected"], "expected")
            val outputs = J.strs(step["outputs"], "outputs")
            val engineStep = ScriptedEngine(ArrayList(outputs))
            val rawFallback = step["raw_fallback"] == true
            val loop = MemoryLoop(engineStep, store, J.str(doc["chat_format"], "chat_format"), templates,
                LoopSettings(updateTopK = J.int(s["update_top_k"], "k"), answerTopK = J.int(s["answer_top_k"], "k"), rawFallback = rawFallback))
            val got = LinkedHashMap<String, Any?>()
            if (step["kind"] == "ingest") {
                val turns = J.list(step["turns"], "turns").map { val t = J.obj(it, "turn"); DialogTurn(J.str(t["speaker"], "s"), J.str(t["text"], "t")) }
                val res = loop.ingestTurn(turns, J.str(step["user"], "user"), step["at"] as String?, J.str(step["today"], "today"))
                got["facts"] = res.facts
                got["n_errors"] = res.errors.size
                got["applied"] = res.applied.map { linkedMapOf("event" to it.event.name, "memory" to dump.ref(it.memoryId), "old_text" to it.oldText, "new_text" to it.newText) }
            } else {
                val k = step["k"]?.let { J.int(it, "k") }
                val ans = loop.answer(J.str(step["question"], "q"), J.strs(step["users"], "users"), k)
                got["text"] = ans.text
                got["memories"] = ans.memories.map { dump.ref(it.id) }
            }
            got["calls"] = engineStep.prompts.withIndex().map { linkedMapOf("op" to loop.traces[it.index].op.value, "adapter" to it.value.first, "prompt" to it.value.second) }
            for ((key, v) in exp) assertEquals("step $i ($key)", Json.dumps(v), Json.dumps(got[key]))
        }
        val final = J.obj(doc["expected_store"], "expected_store")
        val mine = StoreDump(store)
        // refs must agree with the ones assigned while running (creation order)
        assertEquals(Json.dumps(final["history"]), Json.dumps(mine.history))
        assertEquals(Json.dumps(final["memories"]), Json.dumps(mine.memories))
        engine.close()
    }
}

class ChatRenderFixtureTest {
    /** Every chat format renders the fixture's messages as Python does (system folding for gemma,
     *  role renames, markers stripped repeatedly). */
    @Test fun everyChatFormatRendersLikePython() {
        val doc = J.obj(Json.parse(File(Props.file("memlora.fixture"), "conversation.json").readText(Charsets.UTF_8)), "fixture")
        val cases = J.list(doc["chat_render"], "chat_render")
        assertEquals(Chat.FORMATS.size, cases.size)
        for (c in cases) {
            val o = J.obj(c, "chat_render[]")
            val msgs = J.list(o["messages"], "messages").map { val m = J.obj(it, "m"); Message(J.str(m["role"], "role"), J.str(m["content"], "content")) }
            assertEquals(o["format"].toString(), J.str(o["text"], "text"), Chat.render(J.str(o["format"], "format"), msgs))
        }
    }
}
