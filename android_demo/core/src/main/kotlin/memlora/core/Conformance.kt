package memlora.core

/** Optional access to the engine's tokenizer (the host engine has one; LlmModule does not expose it). */
interface TokenizerAccess {
    fun encode(text: String): List<Int>
    fun decode(ids: List<Int>): String
}

class SectionResult(val name: String) {
    var total = 0
    val failures = ArrayList<String>()
    var skipped: String? = null
    val passed: Boolean get() = skipped == null && failures.isEmpty()

    fun check(ok: Boolean, what: String) {
        total++
        if (!ok) failures.add(what)
    }

    fun toJson(): Map<String, Any?> = linkedMapOf("total" to total, "failed" to failures.size,
        "passed" to (failures.isEmpty()), "skipped" to skipped, "failures" to failures.take(20))
}

/**
 * Runs every section of a bundle's `conformance.json` (`memlora/conformance.py`) against this
 * core: rendered prompts byte-equal, every parse case, greedy prefixes through an [Engine], and
 * tokenizer ids where the engine exposes its tokenizer. The app's self-test writes [report].
 */
class Conformance(private val doc: Map<String, Any?>, private val templates: Templates) {
    val chatFormat: String = J.str(doc["chat_format"], "conformance chat_format")
    val sections = LinkedHashMap<String, SectionResult>()

    init {
        if (doc["format"] != "memlora-conformance") throw IllegalArgumentException("not a memlora conformance file")
        val v = doc["version"] as? Long ?: 0L
        if (v != 1L) throw IllegalArgumentException("conformance version $v not supported (this core reads 1)")
    }

    /** The prompt text the loop renders for one `prompts[].case`. */
    fun promptFor(case: Map<String, Any?>): String {
        val op = Op.of(J.str(case["op"], "case.op"))
        val messages = when (op) {
            Op.EXTRACT -> Prompts.extractMessages(templates, J.list(case["turns"], "turns").map {
                val t = J.obj(it, "turn"); DialogTurn(J.str(t["speaker"], "speaker"), J.str(t["text"], "text"))
            }, J.str(case["today"], "today"))
            Op.UPDATE -> Prompts.updateMessages(templates, J.list(case["old_memory"], "old_memory").map {
                val p = J.strs(it, "old_memory[]"); Pair(p[0], p[1])
            }, J.strs(case["facts"], "facts"))
            Op.ANSWER -> Prompts.answerMessages(templates, J.str(case["question"], "question"), J.list(case["memories"], "memories").map {
                val p = J.strs(it, "memories[]"); Pair(p[0], p[1])
            })
        }
        return Prompts.render(chatFormat, messages)
    }

    fun runPrompts(tok: TokenizerAccess? = null): SectionResult {
        val r = SectionResult("prompts")
        for ((i, item) in J.list(doc["prompts"], "prompts").withIndex()) {
            val p = J.obj(item, "prompts[]")
            val want = J.str(p["text"], "text")
            val got = promptFor(J.obj(p["case"], "case"))
            r.check(got == want, "prompts[$i]: rendered text differs at char ${firstDiff(got, want)}")
            if (tok != null) r.check(tok.encode(got) == J.ints(p["ids"], "ids"), "prompts[$i]: token ids differ")
        }
        sections[r.name] = r
        return r
    }

    fun runParse(): SectionResult {
        val r = SectionResult("parse")
        for ((i, item) in J.list(doc["parse"], "parse").withIndex()) {
            val c = J.obj(item, "parse[]")
            val raw = J.str(c["raw"], "raw")
            val exp = J.obj(c["expected"], "expected")
            if (c["op"] == "extract") {
                val res = Parsing.parseExtract(raw)
                r.check(res.facts == J.strs(exp["facts"], "facts") && res.errors.size == J.int(exp["n_errors"], "n_errors"),
                    "parse[$i] (extract): got facts ${Json.dumps(res.facts)} with ${res.errors.size} errors, expected ${Json.dumps(exp["facts"])} with ${exp["n_errors"]}")
            } else {
                val res = Parsing.parseUpdate(raw, IdMap(J.strs(exp["memory_ids"], "memory_ids")))
                val got = res.ops.map { linkedMapOf("event" to it.event.name, "id" to it.id, "text" to it.text, "old_memory" to it.oldMemory) }
                r.check(Json.dumps(got) == Json.dumps(exp["ops"]) && res.errors.size == J.int(exp["n_errors"], "n_errors"),
                    "parse[$i] (update): got ${Json.dumps(got)} with ${res.errors.size} errors, expected ${Json.dumps(exp["ops"])} with ${exp["n_errors"]}")
            }
        }
        sections[r.name] = r
        return r
    }

    fun runTokenizer(tok: TokenizerAccess?): SectionResult {
        val r = SectionResult("tokenizer")
        if (tok == null) { r.skipped = "engine does not expose its tokenizer"; sections[r.name] = r; return r }
        for ((i, item) in J.list(doc["tokenizer"], "tokenizer").withIndex()) {
            val t = J.obj(item, "tokenizer[]")
            val ids = tok.encode(J.str(t["text"], "text"))
            r.check(ids == J.ints(t["ids"], "ids"), "tokenizer[$i]: ids differ")
            r.check(tok.decode(ids) == J.str(t["decoded"], "decoded"), "tokenizer[$i]: decoded text differs")
        }
        sections[r.name] = r
        return r
    }

    /** Greedy prefixes: exactly n argmax tokens, no stop rule. Ids compared where the engine
     *  returns them, else the decoded text. */
    fun runGreedy(engine: Engine, tok: TokenizerAccess? = null): SectionResult {
        val r = SectionResult("greedy")
        for ((i, item) in J.list(doc["greedy"], "greedy").withIndex()) {
            val g = J.obj(item, "greedy[]")
            val adapter = J.str(g["adapter"], "adapter")
            val wantIds = J.ints(g["ids"], "ids")
            val prompt = promptFor(J.obj(g["case"], "case"))
            if (tok != null) r.check(tok.encode(prompt) == J.ints(g["prompt_ids"], "prompt_ids"), "greedy[$i] ($adapter): prompt ids differ")
            val res = engine.generate(adapter, prompt, GenerationSettings(maxNewTokens = wantIds.size, temperature = 0.0,
                stop = emptyList(), eosIds = emptyList()), null)
            if (res.tokenIds.isNotEmpty()) r.check(res.tokenIds == wantIds, "greedy[$i] ($adapter): ids ${res.tokenIds} != $wantIds")
            else r.check(res.text == J.str(g["text"], "text"), "greedy[$i] ($adapter): text ${Json.quote(res.text)} != ${Json.quote(J.str(g["text"], "text"))}")
        }
        sections[r.name] = r
        return r
    }

    fun runAll(engine: Engine?, tok: TokenizerAccess?): Map<String, Any?> {
        runTokenizer(tok)
        runPrompts(tok)
        runParse()
        if (engine != null) runGreedy(engine, tok) else {
            val r = SectionResult("greedy"); r.skipped = "no engine"; sections[r.name] = r
        }
        return report()
    }

    /** The JSON report the app writes (`memlora-conformance-report`). */
    fun report(extra: Map<String, Any?> = emptyMap()): Map<String, Any?> {
        val out = LinkedHashMap<String, Any?>()
        out["format"] = "memlora-conformance-report"
        out["version"] = 1
        out["chat_format"] = chatFormat
        out["passed"] = sections.values.all { it.passed || it.skipped != null } && sections.values.any { it.passed }
        val secs = LinkedHashMap<String, Any?>()
        for ((k, v) in sections) secs[k] = v.toJson()
        out["sections"] = secs
        out.putAll(extra)
        return out
    }

    private fun firstDiff(a: String, b: String): Int {
        val n = Math.min(a.length, b.length)
        for (i in 0 until n) if (a[i] != b[i]) return i
        return n
    }
}
