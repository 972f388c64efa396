package memlora.core

/** How to generate (`engine.py` GenerationSettings). [eosIds] null: the engine's own eos set. */
class GenerationSettings(
    val maxNewTokens: Int = 256,
    val temperature: Double = 0.0,
    val topP: Double = 1.0,
    val seed: Long? = 0L,
    val stop: List<String> = emptyList(),
    val eosIds: List<Int>? = null
) {
    init {
        require(maxNewTokens >= 1) { "maxNewTokens must be >= 1, got $maxNewTokens" }
        require(temperature >= 0) { "temperature must be >= 0, got $temperature" }
        require(topP > 0 && topP <= 1) { "topP must be in (0, 1], got $topP" }
        require(stop.all { it.isNotEmpty() }) { "stop strings must be non-empty" }
    }

    fun withStop(s: List<String>): GenerationSettings = GenerationSettings(maxNewTokens, temperature, topP, seed, s, eosIds)

    fun toJson(): Map<String, Any?> = linkedMapOf("max_new_tokens" to maxNewTokens, "temperature" to temperature,
        "top_p" to topP, "seed" to seed, "stop" to stop, "eos_ids" to eosIds)
}

/** One completion. Times in milliseconds; [tokenIds] empty where the runtime does not expose them. */
class GenerationResult(
    val text: String,
    val tokenIds: List<Int>,
    val promptTokens: Int,
    val stoppedBy: String,
    val prefillMs: Double,
    val decodeMs: Double,
    val ttftMs: Double = prefillMs
) {
    val newTokens: Int get() = tokenIds.size
    val decodeTokensPerS: Double get() = if (decodeMs > 0) newTokens * 1000.0 / decodeMs else 0.0
    val prefillTokensPerS: Double get() = if (prefillMs > 0) promptTokens * 1000.0 / prefillMs else 0.0
}

/**
 * A text generator over one shared base with switchable adapters: ExecuTorch `LlmModule`s on the
 * phone, a JSON-lines Python process on the host, canned outputs in tests. An implementation must
 * drop its KV cache before every call (a cache filled under one adapter is garbage under another),
 * cut the text at the first stop string, and call [onToken] with each new piece of text.
 */
interface Engine {
    val adapters: List<String>
    fun generate(adapter: String?, prompt: String, settings: GenerationSettings, onToken: ((String) -> Unit)?): GenerationResult
    /** Ask a running [generate] to finish early (from another thread). */
    fun stop() {}
    fun close() {}
}

/** Replays canned outputs in call order (the app fixture's model), recording every prompt. */
class ScriptedEngine(private val outputs: MutableList<String>, override val adapters: List<String> = listOf("extract", "update", "answer")) : Engine {
    val prompts = ArrayList<Pair<String?, String>>()

    override fun generate(adapter: String?, prompt: String, settings: GenerationSettings, onToken: ((String) -> Unit)?): GenerationResult {
        prompts.add(Pair(adapter, prompt))
        if (outputs.isEmpty()) throw IllegalStateException("scripted engine: no canned output left for call ${prompts.size} ($adapter)")
        var text = outputs.removeAt(0)
        var stoppedBy = "length"
        for (s in settings.stop) {
            val i = text.indexOf(s)
            if (i >= 0) { text = text.substring(0, i); stoppedBy = "stop" }
        }
        onToken?.invoke(text)
        return GenerationResult(text, emptyList(), 0, stoppedBy, 0.0, 0.0)
    }
}
