package memlora.core

/** Generation settings per operation, retrieval sizes and adapter names (`loop.py` LoopSettings). */
class LoopSettings(
    val extract: GenerationSettings = GenerationSettings(maxNewTokens = 256),
    val update: GenerationSettings = GenerationSettings(maxNewTokens = 512),
    val answer: GenerationSettings = GenerationSettings(maxNewTokens = 48),
    val updateTopK: Int = 5,
    val answerTopK: Int = 30,
    val adapters: Map<Op, String?> = mapOf(Op.EXTRACT to "extract", Op.UPDATE to "update", Op.ANSWER to "answer"),
    /** Store a turn verbatim when the model yields nothing valid (`runtime.ingest(raw_fallback=True)`). */
    val rawFallback: Boolean = false
) {
    fun generation(op: Op): GenerationSettings = when (op) {
        Op.EXTRACT -> extract
        Op.UPDATE -> update
        Op.ANSWER -> answer
    }
}

class OpStats {
    var calls = 0
    var failures = 0
    var promptTokens = 0
    var newTokens = 0
    var prefillMs = 0.0
    var decodeMs = 0.0
    var totalMs = 0.0
}

/** What one operation did, for the app's pipeline panel. */
class StageTrace(val op: Op, val adapter: String?, val prompt: String, val raw: String, val errors: List<String>,
                 val result: GenerationResult, val totalMs: Double)

class Answer(val text: String, val memories: List<Memory>)

class IngestResult(val facts: List<String>, val applied: List<AppliedOp>, val errors: List<String>)

/**
 * Extract / update / answer over one [Engine] and [MemoryStore], exactly as `memlora/memory/loop.py`
 * (plus `runtime.ingest`'s raw fallback when [LoopSettings.rawFallback] is set).
 */
class MemoryLoop(
    val engine: Engine,
    val store: MemoryStore,
    val chatFormat: String,
    val templates: Templates,
    val settings: LoopSettings = LoopSettings()
) {
    val stats: Map<Op, OpStats> = linkedMapOf(Op.EXTRACT to OpStats(), Op.UPDATE to OpStats(), Op.ANSWER to OpStats())
    var lastErrors: List<String> = emptyList()
    val lastRaw = LinkedHashMap<Op, String>()
    /** Every stage run, oldest first (the pipeline panel reads it). */
    val traces = ArrayList<StageTrace>()
    /** Streaming callback for the answer operation. */
    var onToken: ((String) -> Unit)? = null

    init {
        Chat.format(chatFormat)
        val missing = settings.adapters.values.filter { it != null && it !in engine.adapters }
        if (missing.isNotEmpty()) throw IllegalArgumentException("engine has adapters ${engine.adapters}, missing $missing")
    }

    private fun run(op: Op, messages: List<Message>): GenerationResult {
        val gen = settings.generation(op)
        val stops = LinkedHashSet<String>()
        stops.addAll(gen.stop)
        stops.addAll(Chat.stopStrings(chatFormat))
        val prompt = Prompts.render(chatFormat, messages)
        val t0 = System.nanoTime()
        val res = engine.generate(settings.adapters[op], prompt, gen.withStop(ArrayList(stops)), if (op == Op.ANSWER) onToken else null)
        val ms = (System.nanoTime() - t0) / 1e6
        val s = stats.getValue(op)
        s.calls++
        s.promptTokens += res.promptTokens
        s.newTokens += res.newTokens
        s.prefillMs += res.prefillMs
        s.decodeMs += res.decodeMs
        s.totalMs += ms
        lastRaw[op] = res.text
        traces.add(StageTrace(op, settings.adapters[op], prompt, res.text, emptyList(), res, ms))
        return res
    }

    private fun fail(op: Op, errors: List<String>) {
        if (errors.isNotEmpty()) {
            stats.getValue(op).failures++
            val t = traces[traces.size - 1]
            traces[traces.size - 1] = StageTrace(t.op, t.adapter, t.prompt, t.raw, errors, t.result, t.totalMs)
        }
        lastErrors = errors
    }

    fun extract(turns: List<DialogTurn>, today: String): ExtractResult {
        val res = run(Op.EXTRACT, Prompts.extractMessages(templates, turns, today))
        val parsed = Parsing.parseExtract(res.text)
        fail(Op.EXTRACT, parsed.errors)
        return parsed
    }

    /** The union (in retrieval order) of each fact's top-`updateTopK` memories. */
    fun retrieveForFacts(facts: List<String>, user: String): List<Memory> {
        val seen = LinkedHashMap<String, Memory>()
        for (f in facts) for (hit in store.search(f, user, settings.updateTopK)) {
            if (!seen.containsKey(hit.memory.id)) seen[hit.memory.id] = hit.memory
        }
        return ArrayList(seen.values)
    }

    fun update(facts: List<String>, user: String, at: String? = null): List<AppliedOp> {
        if (facts.isEmpty()) { lastErrors = emptyList(); return emptyList() }
        val old = retrieveForFacts(facts, user)
        val idMap = IdMap(old.map { it.id })
        val shown = old.map { Pair(idMap.short(it.id), it.text) }
        val res = run(Op.UPDATE, Prompts.updateMessages(templates, shown, facts))
        val parsed = Parsing.parseUpdate(res.text, idMap)
        fail(Op.UPDATE, parsed.errors)
        return store.apply(parsed.ops, user, at).applied
    }

    /** Answer from the top-k memories of one or several users (hits merged best first, stable). */
    fun answer(question: String, users: List<String>, k: Int? = null): Answer {
        val kk = k ?: settings.answerTopK
        val hits = ArrayList<SearchHit>()
        for (u in users) hits.addAll(store.search(question, u, kk))
        val sorted = hits.sortedWith(compareBy { -it.score })
        val memories = sorted.take(kk).map { it.memory }
        val res = run(Op.ANSWER, Prompts.answerMessages(templates, question, memories.map { Pair(it.updatedAt, it.text) }))
        var text = PyText.strip(res.text)
        if (text.length >= 7 && PyText.lower(text.substring(0, 7)) == "answer:") text = PyText.strip(text.substring(7))
        return Answer(text, memories)
    }

    /** Extract facts from [turns] and fold them into [user]'s memories (`runtime.ingest`). */
    fun ingestTurn(turns: List<DialogTurn>, user: String, at: String? = null, today: String): IngestResult {
        val extracted = extract(turns, today)
        val last = turns[turns.size - 1].text
        val facts = if (extracted.facts.isNotEmpty()) extracted.facts
            else if (settings.rawFallback && PyText.strip(last).isNotEmpty()) listOf(last) else emptyList()
        var applied = update(facts, user, at)
        val errors = ArrayList(extracted.errors)
        errors.addAll(lastErrors)
        if (settings.rawFallback && applied.isEmpty() && errors.isNotEmpty()) {
            applied = store.apply(facts.map { UpdateOp(Event.ADD, null, it) }, user, at, "fallback").applied
        }
        return IngestResult(facts, applied, errors)
    }
}
