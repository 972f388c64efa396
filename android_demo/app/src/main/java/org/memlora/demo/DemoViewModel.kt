package org.memlora.demo

import android.app.Application
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateListOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.lifecycle.AndroidViewModel
import memlora.core.Bundle
import memlora.core.BundleError
import memlora.core.Conformance
import memlora.core.DialogTurn
import memlora.core.Engine
import memlora.core.GenerationSettings
import memlora.core.HistoryEntry
import memlora.core.Json
import memlora.core.LoopSettings
import memlora.core.Memory
import memlora.core.MemoryLoop
import memlora.core.MemoryStore
import memlora.core.StageTrace
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.concurrent.Executors

data class ChatMessage(val fromUser: Boolean, val text: String, val metrics: String = "", val memoriesUsed: List<String> = emptyList())

/** Op settings the user can change (defaults from the loop; the bundle's adapters name the ops). */
data class UiSettings(val extractTokens: Int = 256, val updateTokens: Int = 512, val answerTokens: Int = 48,
                      val temperature: Double = 0.0, val answerTopK: Int = 30, val updateTopK: Int = 5)

/** All app state; the heavy work runs on one background thread (ExecuTorch modules are not re-entrant). */
class DemoViewModel(app: Application) : AndroidViewModel(app) {
    private val worker = Executors.newSingleThreadExecutor()
    private val main = android.os.Handler(android.os.Looper.getMainLooper())

    /** Snapshot lists are mutated on the main thread only. */
    private fun ui(block: () -> Unit) { main.post(block) }
    private val user = "me"

    var status by mutableStateOf("Pick a bundle: adb push it to ${defaultBundleDir().path} or import a folder.")
    var progress by mutableStateOf<Float?>(null)
    var ramWarning by mutableStateOf<String?>(null)
    var busy by mutableStateOf(false)
    var settings by mutableStateOf(UiSettings())
    var streaming by mutableStateOf("")
    val chat = mutableStateListOf<ChatMessage>()
    val memories = mutableStateListOf<Memory>()
    val history = mutableStateListOf<HistoryEntry>()
    val traces = mutableStateListOf<StageTrace>()
    var selfTest by mutableStateOf("")

    private var bundle: Bundle? = null
    private var engine: Engine? = null
    private var store: MemoryStore? = null
    private var loop: MemoryLoop? = null

    fun defaultBundleDir(): File = File(getApplication<Application>().getExternalFilesDir(null), "bundle")

    private fun background(what: String, block: () -> Unit) {
        if (busy) return
        busy = true
        worker.execute {
            try {
                block()
            } catch (e: BundleError) {
                status = e.message ?: "bad bundle"
            } catch (e: Exception) {
                status = "$what failed: ${e.javaClass.simpleName}: ${e.message}"
            } finally {
                busy = false
                progress = null
            }
        }
    }

    /** Open [dir]: manifest, sha256 of every file (with progress), runtime version, programs, store. */
    fun openBundle(dir: File) = background("opening the bundle") {
        close()
        status = "Checking ${dir.path} ..."
        val b = Bundle.open(dir, verify = true) { done, total, _ -> progress = if (total > 0) done.toFloat() / total else null }
        b.runtimeMismatch("executorch", BuildConfig.EXECUTORCH_VERSION)?.let { throw BundleError(it) }
        val artifact = b.selectArtifact("executorch")
        ramWarning = ramWarning(getApplication(), ExecuTorchEngine.residentBytes(b, artifact))
        status = "Loading ${artifact.adapters.size} programs (${artifact.key}) ..."
        val e = ExecuTorchEngine(b, artifact)
        val s = MemoryStore(AndroidSql(File(getApplication<Application>().filesDir, "memories.db")))
        bundle = b
        engine = e
        store = s
        rebuildLoop()
        refreshMemories()
        status = "Ready: ${b.model()["family"]} · ${artifact.key} · retrieval ${s.textSearch}"
    }

    private fun rebuildLoop() {
        val b = bundle ?: return
        val e = engine ?: return
        val s = store ?: return
        val u = settings
        fun gen(n: Int) = GenerationSettings(maxNewTokens = n, temperature = u.temperature)
        loop = MemoryLoop(e, s, b.chatFormat, b.templates(),
            LoopSettings(gen(u.extractTokens), gen(u.updateTokens), gen(u.answerTokens), u.updateTopK, u.answerTopK))
    }

    /** Copy a folder picked with the system file picker into app storage, then open it. */
    fun importAndOpen(context: android.content.Context, tree: android.net.Uri) {
        if (busy) return
        busy = true
        worker.execute {
            val dir = try {
                importTree(context, tree) { bytes, name -> status = "Importing $name (${bytes / (1024 * 1024)} MB copied)" }
            } catch (e: Exception) {
                status = "Import failed: ${e.message}"; null
            } finally {
                busy = false
            }
            if (dir != null) android.os.Handler(android.os.Looper.getMainLooper()).post { openBundle(dir) }
        }
    }

    fun updateSettings(new: UiSettings) {
        settings = new
        if (!busy) rebuildLoop()
    }

    /** One chat step: remember the message (extract -> update), then answer it from memory. */
    fun send(text: String) {
        val l = loop ?: run { status = "Open a bundle first."; return }
        chat.add(ChatMessage(true, text))
        background("chat") {
            val today = SimpleDateFormat("yyyy-MM-dd", Locale.ROOT).format(Date())
            val ingest = l.ingestTurn(listOf(DialogTurn(user, text)), user, null, today)
            streaming = ""
            l.onToken = { piece -> streaming += piece }
            val answer = l.answer(text, listOf(user))
            l.onToken = null
            val m = (engine as? ExecuTorchEngine)?.lastStats
            val metrics = m?.let { "TTFT %.0f ms · prefill %.1f tok/s · decode %.1f tok/s".format(it.ttftMs, it.prefillTokPerS, it.decodeTokPerS) } ?: ""
            val note = if (ingest.errors.isEmpty()) "" else " · ${ingest.errors.size} invalid output item(s) dropped"
            val last = l.traces.takeLast(3)
            ui {
                chat.add(ChatMessage(false, answer.text, metrics + note, answer.memories.map { it.text }))
                streaming = ""
                traces.clear()
                traces.addAll(last)
            }
            refreshMemories()
        }
    }

    fun stop() { engine?.stop() }

    fun refreshMemories() {
        val s = store ?: return
        val list = s.list()
        val events = s.history()
        ui {
            memories.clear(); memories.addAll(list)
            history.clear(); history.addAll(events)
        }
    }

    fun delete(id: String) = background("delete") { store?.delete(id); refreshMemories() }

    fun wipe() = background("wipe") { store?.wipe(); refreshMemories() }

    /** The store as JSON (memories + history) in the app's external files dir. */
    fun exportMemories(): File? {
        val s = store ?: return null
        val out = File(getApplication<Application>().getExternalFilesDir(null), "memories.json")
        out.writeText(Json.dumps(linkedMapOf("memories" to s.list().map { it.toJson() }, "history" to s.history().map { it.toJson() })))
        status = "Exported to ${out.path}"
        return out
    }

    /** Run the bundle's conformance vectors on this device; write a JSON report `memlora` can check. */
    fun runSelfTest() = background("self-test") {
        val b = bundle ?: throw BundleError("open a bundle first")
        val conf = Conformance(b.conformance(), b.templates())
        val report = conf.runAll(engine, null)
        val out = File(getApplication<Application>().getExternalFilesDir(null), "conformance-report.json")
        val full = conf.report(linkedMapOf("device" to android.os.Build.MODEL, "android" to android.os.Build.VERSION.SDK_INT,
            "executorch" to BuildConfig.EXECUTORCH_VERSION, "bundle_created" to b.manifest["created"]))
        out.writeText(Json.dumps(full))
        selfTest = conf.sections.values.joinToString("\n") { s ->
            "${s.name}: " + (s.skipped?.let { "skipped ($it)" } ?: "${s.total - s.failures.size}/${s.total} passed") +
                s.failures.take(3).joinToString("") { "\n  - $it" }
        } + "\n\npassed: ${report["passed"]}\nreport: ${out.path}\n(adb pull ${out.path})"
    }

    private fun close() {
        engine?.close(); engine = null
        store?.close(); store = null
        loop = null
    }

    override fun onCleared() {
        worker.execute { close() }
        worker.shutdown()
    }
}
