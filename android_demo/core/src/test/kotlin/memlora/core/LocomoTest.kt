package memlora.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

/** The Kotlin loop on a LoCoMo slice through the exported model equals the Python loop's store. */
class LocomoTest {
    @Test fun locomoSliceStoreEqualsPython() {
        val py = J.obj(Json.parse(Props.file("memlora.pystore").readText(Charsets.UTF_8)), "python dump")
        val st = J.obj(py["settings"], "settings")
        val bundle = Bundle.open(Props.file("memlora.bundle"))
        val engine = HostEngine(Props.need("memlora.python"), bundle.root.path, J.str(st["backend"], "backend"))
        try {
            val conv = Locomo.load(Props.file("memlora.locomo"))[0]
            assertEquals(py["sample_id"], conv.sampleId)
            val n = J.int(st["max_new_tokens"], "max_new_tokens")
            val gen = GenerationSettings(maxNewTokens = n)
            val store = memStore()
            val loop = MemoryLoop(engine, store, bundle.chatFormat, bundle.templates(), LoopSettings(gen, gen, gen,
                J.int(st["update_top_k"], "k"), J.int(st["answer_top_k"], "k"), rawFallback = true))
            val turnsPer = Integer.getInteger("memlora.turns", 8)
            val sessions = Integer.getInteger("memlora.sessions", 1)
            val questions = Integer.getInteger("memlora.questions", 3)
            var turns = 0
            for (sess in conv.sessions.take(sessions)) for (t in sess.turns.take(turnsPer)) {
                loop.ingestTurn(listOf(DialogTurn(t.speaker, t.displayText())), conv.sampleId + ":" + t.speaker, sess.date(), sess.date())
                turns++
            }
            assertEquals(py["turns"], turns.toLong())
            val users = listOf(conv.sampleId + ":" + conv.speakerA, conv.sampleId + ":" + conv.speakerB)
            val answers = ArrayList<Pair<String, Answer>>()
            for (q in conv.qa.filter { it.category != 5 }.take(questions)) answers.add(Pair(q.question, loop.answer(q.question, users)))
            val dump = StoreDump(store)
            val calls = loop.traces.map { linkedMapOf("op" to it.op.value, "raw" to it.raw) }
            val ans = answers.map { linkedMapOf("question" to it.first, "text" to it.second.text, "memories" to it.second.memories.map { m -> dump.ref(m.id) }) }
            assertEquals("raw model outputs, call by call", Json.dumps(py["calls"]), Json.dumps(calls))
            assertEquals("history", Json.dumps(py["history"]), Json.dumps(dump.history))
            assertEquals("memories", Json.dumps(py["memories"]), Json.dumps(dump.memories))
            assertEquals("answers", Json.dumps(py["answers"]), Json.dumps(ans))
            assertTrue("the slice must fill the store", dump.memories.size >= 4)
            System.err.println("locomo slice ${conv.sampleId}: $turns turns, ${dump.memories.size} memories, ${dump.history.size} history events, ${calls.size} model calls, ${answers.size} answers: equal to Python")
        } finally {
            engine.close()
        }
    }
}
