package memlora.core

import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone
import java.util.UUID

class Memory(val id: String, val user: String, val text: String, val createdAt: String, val updatedAt: String,
             val hasEmbedding: Boolean = false) {
    fun toJson(): Map<String, Any?> = linkedMapOf("id" to id, "user" to user, "text" to text,
        "created_at" to createdAt, "updated_at" to updatedAt)
}

class SearchHit(val memory: Memory, val score: Double)

/** An event the store applied (and logged). */
class AppliedOp(val event: Event, val memoryId: String, val oldText: String?, val newText: String?)

class HistoryEntry(val id: Long, val memoryId: String, val event: String, val oldText: String?, val newText: String?,
                   val at: String, val actor: String) {
    fun toJson(): Map<String, Any?> = linkedMapOf("id" to id, "memory_id" to memoryId, "event" to event,
        "old_text" to oldText, "new_text" to newText, "at" to at, "actor" to actor)
}

class ApplyResult(val applied: List<AppliedOp>, val skipped: List<String>)

/**
 * Memories of any number of users in one SQLite database, as `memlora/memory/store.py`: same
 * schema, same FTS5 triggers, one transaction per batch, every applied event in `history`.
 * Retrieval: BM25 over FTS5, else the token-overlap scorer (Android's platform SQLite may lack FTS5;
 * Python falls back the same way). Embedding retrieval is not ported (text search only).
 */
class MemoryStore(private val db: Sql, useFts: Boolean? = null) {
    companion object {
        private val SCHEMA = listOf(
            "CREATE TABLE IF NOT EXISTS memories (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE," +
                " user TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, embedding BLOB)",
            "CREATE INDEX IF NOT EXISTS memories_user ON memories(user)",
            "CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT NOT NULL," +
                " event TEXT NOT NULL, old_text TEXT, new_text TEXT, at TEXT NOT NULL, actor TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id)"
        )
        private val FTS_SCHEMA = listOf(
            "CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='seq')",
            "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN\n" +
                "  INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text); END",
            "CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN\n" +
                "  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text); END",
            "CREATE TRIGGER memories_au AFTER UPDATE OF text ON memories BEGIN\n" +
                "  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);\n" +
                "  INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text); END",
            "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')"
        )
        private const val COLS = "id, user, text, created_at, updated_at, embedding IS NOT NULL"

        /** `datetime.now(timezone.utc).isoformat(timespec="seconds")`. */
        fun now(): String {
            val f = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss", Locale.ROOT)
            f.timeZone = TimeZone.getTimeZone("UTC")
            return f.format(Date()) + "+00:00"
        }
    }

    val useFts: Boolean
    val textSearch: String

    /** Test hook, called inside [apply]'s transaction after each op. */
    var afterOpHook: ((Int, AppliedOp) -> Unit)? = null

    init {
        for (s in SCHEMA) db.execute(s)
        val has = fts5Available()
        if (useFts == true && !has) throw IllegalStateException("useFts=true but this SQLite build lacks FTS5")
        this.useFts = useFts ?: has
        if (this.useFts && db.query("SELECT 1 FROM sqlite_master WHERE name = ?", listOf("memories_fts")).isEmpty()) {
            db.transaction { for (s in FTS_SCHEMA) db.execute(s) }
        }
        textSearch = if (this.useFts) "fts5-bm25" else "token-overlap"
    }

    private fun fts5Available(): Boolean = try {
        db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.memlora_fts5_probe USING fts5(x)")
        db.execute("DROP TABLE IF EXISTS temp.memlora_fts5_probe")
        true
    } catch (e: Exception) {
        false
    }

    private fun row(r: List<Any?>): Memory = Memory(r[0] as String, r[1] as String, r[2] as String, r[3] as String,
        r[4] as String, (r[5] as? Long ?: 0L) != 0L)

    private fun log(memoryId: String, event: Event, old: String?, new: String?, at: String, actor: String) {
        db.execute("INSERT INTO history(memory_id, event, old_text, new_text, at, actor) VALUES (?, ?, ?, ?, ?, ?)",
            listOf(memoryId, event.name, old, new, at, actor))
    }

    /** Apply validated ops for [user] in one transaction; log each applied event. UPDATE/DELETE of
     *  an id that no longer exists for [user], NONE, UPDATE to the same text, an ADD of a text [user]
     *  already has, and texts over MAX_TEXT_CHARS code points are skipped (as in Python). */
    fun apply(ops: List<UpdateOp>, user: String, at: String? = null, actor: String = "loop"): ApplyResult {
        val stamp = at ?: now()
        val live = ops.filter { it.event != Event.NONE }
        val applied = ArrayList<AppliedOp>()
        val skipped = ArrayList<String>()
        for (op in ops) if (op.event == Event.NONE) skipped.add("NONE on ${op.id}")
        db.transaction {
            for (op in live) {
                val done: AppliedOp
                if (op.event != Event.DELETE && PyText.len(op.text) > Parsing.MAX_TEXT_CHARS) {
                    skipped.add("${op.event.name} text of ${PyText.len(op.text)} chars (over ${Parsing.MAX_TEXT_CHARS})"); continue
                }
                if (op.event == Event.ADD) {
                    val dup = db.query("SELECT id FROM memories WHERE user = ? AND text = ?", listOf(user, op.text))
                    if (dup.isNotEmpty()) { skipped.add("ADD duplicate of ${dup[0][0]}"); continue }
                    val mid = UUID.randomUUID().toString()
                    db.execute("INSERT INTO memories(id, user, text, created_at, updated_at, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                        listOf(mid, user, op.text, stamp, stamp, null))
                    done = AppliedOp(Event.ADD, mid, null, op.text)
                } else {
                    val rows = db.query("SELECT text FROM memories WHERE id = ? AND user = ?", listOf(op.id, user))
                    if (rows.isEmpty()) { skipped.add("${op.event.name} on missing id ${op.id}"); continue }
                    val oldText = rows[0][0] as String
                    if (op.event == Event.UPDATE) {
                        if (oldText == op.text) { skipped.add("UPDATE on ${op.id} with unchanged text"); continue }
                        db.execute("UPDATE memories SET text = ?, updated_at = ?, embedding = ? WHERE id = ?",
                            listOf(op.text, stamp, null, op.id))
                        done = AppliedOp(Event.UPDATE, op.id!!, oldText, op.text)
                    } else {
                        db.execute("DELETE FROM memories WHERE id = ?", listOf(op.id))
                        done = AppliedOp(Event.DELETE, op.id!!, oldText, null)
                    }
                }
                log(done.memoryId, done.event, done.oldText, done.newText, stamp, actor)
                applied.add(done)
                afterOpHook?.invoke(applied.size - 1, done)
            }
        }
        return ApplyResult(applied, skipped)
    }

    /** Delete one memory (logged); false if it does not exist. */
    fun delete(memoryId: String, actor: String = "user"): Boolean = db.transaction {
        val rows = db.query("SELECT text FROM memories WHERE id = ?", listOf(memoryId))
        if (rows.isEmpty()) false else {
            db.execute("DELETE FROM memories WHERE id = ?", listOf(memoryId))
            log(memoryId, Event.DELETE, rows[0][0] as String, null, now(), actor)
            true
        }
    }

    /** Delete every memory of [user] (or all), each logged as a user DELETE. */
    fun wipe(user: String? = null, actor: String = "user"): Int {
        var n = 0
        for (m in list(user)) if (delete(m.id, actor)) n++
        return n
    }

    fun get(memoryId: String): Memory? =
        db.query("SELECT $COLS FROM memories WHERE id = ?", listOf(memoryId)).firstOrNull()?.let { row(it) }

    /** Memories (of [user], or all), oldest first. */
    fun list(user: String? = null, limit: Int? = null): List<Memory> {
        var sql = "SELECT $COLS FROM memories"
        val args = ArrayList<Any?>()
        if (user != null) { sql += " WHERE user = ?"; args.add(user) }
        sql += " ORDER BY seq"
        if (limit != null) { sql += " LIMIT ?"; args.add(limit.toLong()) }
        return db.query(sql, args).map { row(it) }
    }

    fun count(user: String? = null): Int {
        val r = if (user == null) db.query("SELECT COUNT(*) FROM memories") else
            db.query("SELECT COUNT(*) FROM memories WHERE user = ?", listOf(user))
        return (r[0][0] as Long).toInt()
    }

    fun users(): List<String> = db.query("SELECT DISTINCT user FROM memories ORDER BY user").map { it[0] as String }

    /** Logged events (for one memory, or all), oldest first. */
    fun history(memoryId: String? = null): List<HistoryEntry> {
        var sql = "SELECT id, memory_id, event, old_text, new_text, at, actor FROM history"
        val args = ArrayList<Any?>()
        if (memoryId != null) { sql += " WHERE memory_id = ?"; args.add(memoryId) }
        return db.query("$sql ORDER BY id", args).map {
            HistoryEntry(it[0] as Long, it[1] as String, it[2] as String, it[3] as String?, it[4] as String?,
                it[5] as String, it[6] as String)
        }
    }

    /** Top-[k] memories of [user], best first: BM25 via FTS5, else token overlap. */
    fun search(queryText: String, user: String, k: Int = 5): List<SearchHit> {
        if (k <= 0) return emptyList()
        return if (useFts) ftsSearch(queryText, user, k) else overlapSearch(queryText, user, k)
    }

    private fun ftsSearch(query: String, user: String, k: Int): List<SearchHit> {
        val toks = LinkedHashSet(PyText.tokens(query)).toList()
        if (toks.isEmpty()) return emptyList()
        val match = toks.joinToString(" OR ") { "\"" + it.replace("\"", "\"\"") + "\"" }
        val rows = db.query("SELECT m.id, m.user, m.text, m.created_at, m.updated_at, m.embedding IS NOT NULL," +
            " bm25(memories_fts) FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid" +
            " WHERE memories_fts MATCH ? AND m.user = ? ORDER BY bm25(memories_fts), m.seq LIMIT ?",
            listOf(match, user, k.toLong()))
        return rows.map { SearchHit(row(it), -(it[6] as Number).toDouble()) }
    }

    private fun overlapSearch(query: String, user: String, k: Int): List<SearchHit> {
        val q = HashSet(PyText.tokens(query))
        val scored = ArrayList<SearchHit>()
        for (r in db.query("SELECT $COLS, text FROM memories WHERE user = ? ORDER BY seq", listOf(user))) {
            val words = PyText.tokens(r[6] as String)
            var overlap = 0
            for (w in HashSet(words)) if (w in q) overlap++
            if (overlap > 0) scored.add(SearchHit(row(r), overlap / Math.sqrt(words.size.toDouble())))
        }
        val sorted = scored.sortedWith(compareBy { -it.score })
        return sorted.take(k)
    }

    fun close() = db.close()
}
