package memlora.core

import java.io.File
import java.util.zip.ZipFile

class LocomoTurn(val speaker: String, val diaId: String, val text: String, val blipCaption: String?) {
    /** The text with the image caption appended, as LoCoMo baselines do (`Turn.display_text`). */
    fun displayText(): String = if (!blipCaption.isNullOrEmpty()) "$text [shares $blipCaption]" else text
}

class LocomoSession(val index: Int, val dateTime: String, val turns: List<LocomoTurn>) {
    /** `locomo_eval._date`. */
    fun date(): String = if (dateTime.isNotEmpty()) dateTime else "session $index"
}

class LocomoQA(val question: String, val answer: String, val category: Int)

class LocomoConversation(val sampleId: String, val speakerA: String, val speakerB: String,
                         val sessions: List<LocomoSession>, val qa: List<LocomoQA>)

/** Reads LoCoMo (`memlora/memory/locomo.py`): a .zip of per-conversation JSON or a .json file. */
object Locomo {
    private val SESSION = Regex("^session_(\\d+)$")

    fun parseConversation(raw: Map<String, Any?>, fallbackId: String): LocomoConversation {
        @Suppress("UNCHECKED_CAST")
        val conv = (raw["conversation"] as? Map<String, Any?>) ?: raw
        val sid = raw["sample_id"]?.let { Parsing.pyStr(it) } ?: fallbackId
        val sessions = ArrayList<LocomoSession>()
        for ((key, value) in conv) {
            val m = SESSION.matchEntire(key)
            if (m != null && value is List<*>) {
                val idx = m.groupValues[1].toInt()
                val turns = value.map {
                    val t = J.obj(it, "turn")
                    LocomoTurn(Parsing.pyStr(t["speaker"]), Parsing.pyStr(t["dia_id"]), Parsing.pyStr(t["text"]), t["blip_caption"] as? String)
                }
                sessions.add(LocomoSession(idx, conv["session_${idx}_date_time"]?.let { Parsing.pyStr(it) } ?: "", turns))
            }
        }
        val sorted = sessions.sortedBy { it.index }
        val qa = J.list(raw["qa"] ?: emptyList<Any?>(), "qa").map {
            val q = J.obj(it, "qa[]")
            val ans = if (q.containsKey("answer")) q["answer"] else q["adversarial_answer"]
            LocomoQA(Parsing.pyStr(q["question"]), if (ans == null) "" else Parsing.pyStr(ans), J.int(q["category"], "category"))
        }
        return LocomoConversation(sid, Parsing.pyStr(conv["speaker_a"]), Parsing.pyStr(conv["speaker_b"]), sorted, qa)
    }

    private fun fromJson(data: Any?, name: String): List<LocomoConversation> = when (data) {
        is List<*> -> data.withIndex().map { parseConversation(J.obj(it.value, "conversation"), "$name-${it.index}") }
        is Map<*, *> -> listOf(parseConversation(J.obj(data, "conversation"), name))
        else -> throw IllegalArgumentException("$name: expected a JSON object or list")
    }

    fun load(path: File): List<LocomoConversation> {
        if (path.name.endsWith(".zip")) {
            ZipFile(path).use { zf ->
                val names = zf.entries().toList().map { it.name }.filter { it.endsWith(".json") }
                    .sortedWith(compareBy<String>({ it.length }, { it }))
                val out = ArrayList<LocomoConversation>()
                for (n in names) {
                    val text = zf.getInputStream(zf.getEntry(n)).use { it.readBytes().toString(Charsets.UTF_8) }
                    out.addAll(fromJson(Json.parse(text), n.substringAfterLast('/').removeSuffix(".json")))
                }
                return out
            }
        }
        if (path.name.endsWith(".json")) return fromJson(Json.parse(path.readText(Charsets.UTF_8)), path.name.removeSuffix(".json"))
        throw IllegalArgumentException("${path.path}: expected a .zip or .json LoCoMo file")
    }
}
