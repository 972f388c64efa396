import Foundation

public struct Memory: Equatable {
    public let id: String
    public let user: String
    public let text: String
    public let createdAt: String
    public let updatedAt: String
    public var hasEmbedding: Bool = false

    public func toJSON() -> JSON {
        ["id": .string(id), "user": .string(user), "text": .string(text), "created_at": .string(createdAt),
         "updated_at": .string(updatedAt)]
    }
}

public struct SearchHit {
    public let memory: Memory
    public let score: Double
}

/// An event the store applied (and logged).
public struct AppliedOp: Equatable {
    public let event: Event
    public let memoryId: String
    public let oldText: String?
    public let newText: String?
}

public struct HistoryEntry: Equatable {
    public let id: Int64
    public let memoryId: String
    public let event: String
    public let oldText: String?
    public let newText: String?
    public let at: String
    public let actor: String

    public func toJSON() -> JSON {
        ["id": .int(id), "memory_id": .string(memoryId), "event": .string(event), "old_text": JSON(oldText),
         "new_text": JSON(newText), "at": .string(at), "actor": .string(actor)]
    }
}

public struct ApplyResult {
    public let applied: [AppliedOp]
    public let skipped: [String]
}

public struct StoreError: Error, CustomStringConvertible {
    public let description: String
}

/// Memories of any number of users in one SQLite database, as `memlora/memory/store.py`: same
/// schema, same FTS5 triggers, one transaction per batch, every applied event in `history`.
/// Retrieval: BM25 over FTS5, else the token-overlap scorer (as Python falls back). Embedding
/// retrieval is not ported (text search only), as in the Kotlin core.
public final class MemoryStore {
    static let schema = [
        "CREATE TABLE IF NOT EXISTS memories (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            + " user TEXT NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, embedding BLOB)",
        "CREATE INDEX IF NOT EXISTS memories_user ON memories(user)",
        "CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, memory_id TEXT NOT NULL,"
            + " event TEXT NOT NULL, old_text TEXT, new_text TEXT, at TEXT NOT NULL, actor TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id)",
    ]
    static let ftsSchema = [
        "CREATE VIRTUAL TABLE memories_fts USING fts5(text, content='memories', content_rowid='seq')",
        "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN\n"
            + "  INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text); END",
        "CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN\n"
            + "  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text); END",
        "CREATE TRIGGER memories_au AFTER UPDATE OF text ON memories BEGIN\n"
            + "  INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);\n"
            + "  INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text); END",
        "INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')",
    ]
    static let cols = "id, user, text, created_at, updated_at, embedding IS NOT NULL"

    /// `datetime.now(timezone.utc).isoformat(timespec="seconds")`.
    public static func now() -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
        return f.string(from: Date()) + "+00:00"
    }

    private let db: Sql
    public let useFts: Bool
    public let textSearch: String

    /// Test hook, called inside `apply`'s transaction after each op.
    public var afterOpHook: ((Int, AppliedOp) throws -> Void)?

    /// `useFts` nil: FTS5 when this SQLite build has it.
    public init(_ db: Sql, useFts: Bool? = nil) throws {
        self.db = db
        for s in MemoryStore.schema { try db.execute(s) }
        let has = MemoryStore.fts5Available(db)
        if useFts == true && !has { throw StoreError(description: "useFts=true but this SQLite build lacks FTS5") }
        self.useFts = useFts ?? has
        textSearch = self.useFts ? "fts5-bm25" : "token-overlap"
        let haveFts = !(try db.query("SELECT 1 FROM sqlite_master WHERE name = ?", [.text("memories_fts")])).isEmpty
        if self.useFts && !haveFts {
            try db.transaction { for s in MemoryStore.ftsSchema { try db.execute(s) } }
        }
    }

    private static func fts5Available(_ db: Sql) -> Bool {
        do {
            try db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.memlora_fts5_probe USING fts5(x)")
            try db.execute("DROP TABLE IF EXISTS temp.memlora_fts5_probe")
            return true
        } catch {
            return false
        }
    }

    private func row(_ r: [SqlValue]) -> Memory {
        Memory(id: r[0].string ?? "", user: r[1].string ?? "", text: r[2].string ?? "", createdAt: r[3].string ?? "",
               updatedAt: r[4].string ?? "", hasEmbedding: (r[5].int ?? 0) != 0)
    }

    private func log(_ memoryId: String, _ event: Event, _ old: String?, _ new: String?, _ at: String, _ actor: String) throws {
        try db.execute("INSERT INTO history(memory_id, event, old_text, new_text, at, actor) VALUES (?, ?, ?, ?, ?, ?)",
                       [.text(memoryId), .text(event.rawValue), old.map { .text($0) } ?? .null,
                        new.map { .text($0) } ?? .null, .text(at), .text(actor)])
    }

    /// Apply validated ops for `user` in one transaction; log each applied event. UPDATE/DELETE of
    /// an id that no longer exists for `user`, NONE, and UPDATE to the same text are skipped.
    @discardableResult
    public func apply(_ ops: [UpdateOp], user: String, at: String? = nil, actor: String = "loop") throws -> ApplyResult {
        let stamp = at ?? MemoryStore.now()
        var applied: [AppliedOp] = []
        var skipped: [String] = ops.filter { $0.event == .NONE }.map { "NONE on \($0.id ?? "None")" }
        try db.transaction {
            for op in ops where op.event != .NONE {
                let done: AppliedOp
                if op.event != .DELETE && PyText.len(op.text) > Parsing.maxTextChars {
                    skipped.append("\(op.event.rawValue) text of \(PyText.len(op.text)) chars (over \(Parsing.maxTextChars))"); continue
                }
                if op.event == .ADD {
                    let dup = try db.query("SELECT id FROM memories WHERE user = ? AND text = ?", [.text(user), .text(op.text)])
                    if let first = dup.first { skipped.append("ADD duplicate of \(first[0].string ?? "")"); continue }
                    let mid = UUID().uuidString.lowercased()
                    try db.execute("INSERT INTO memories(id, user, text, created_at, updated_at, embedding) VALUES (?, ?, ?, ?, ?, ?)",
                                   [.text(mid), .text(user), .text(op.text), .text(stamp), .text(stamp), .null])
                    done = AppliedOp(event: .ADD, memoryId: mid, oldText: nil, newText: op.text)
                } else {
                    let id = op.id ?? ""
                    let rows = try db.query("SELECT text FROM memories WHERE id = ? AND user = ?", [.text(id), .text(user)])
                    guard let oldText = rows.first?[0].string else {
                        skipped.append("\(op.event.rawValue) on missing id \(id)"); continue
                    }
                    if op.event == .UPDATE {
                        if PyText.same(oldText, op.text) { skipped.append("UPDATE on \(id) with unchanged text"); continue }
                        try db.execute("UPDATE memories SET text = ?, updated_at = ?, embedding = ? WHERE id = ?",
                                       [.text(op.text), .text(stamp), .null, .text(id)])
                        done = AppliedOp(event: .UPDATE, memoryId: id, oldText: oldText, newText: op.text)
                    } else {
                        try db.execute("DELETE FROM memories WHERE id = ?", [.text(id)])
                        done = AppliedOp(event: .DELETE, memoryId: id, oldText: oldText, newText: nil)
                    }
                }
                try log(done.memoryId, done.event, done.oldText, done.newText, stamp, actor)
                applied.append(done)
                try afterOpHook?(applied.count - 1, done)
            }
        }
        return ApplyResult(applied: applied, skipped: skipped)
    }

    /// Delete one memory (logged); false if it does not exist.
    @discardableResult
    public func delete(_ memoryId: String, actor: String = "user") throws -> Bool {
        try db.transaction {
            let rows = try db.query("SELECT text FROM memories WHERE id = ?", [.text(memoryId)])
            guard let old = rows.first?[0].string else { return false }
            try db.execute("DELETE FROM memories WHERE id = ?", [.text(memoryId)])
            try log(memoryId, .DELETE, old, nil, MemoryStore.now(), actor)
            return true
        }
    }

    /// Delete every memory of `user` (or all), each logged as a user DELETE.
    @discardableResult
    public func wipe(user: String? = nil, actor: String = "user") throws -> Int {
        var n = 0
        for m in try list(user: user) {
            if try delete(m.id, actor: actor) { n += 1 }
        }
        return n
    }

    public func get(_ memoryId: String) throws -> Memory? {
        try db.query("SELECT \(MemoryStore.cols) FROM memories WHERE id = ?", [.text(memoryId)]).first.map(row)
    }

    /// Memories (of `user`, or all), oldest first.
    public func list(user: String? = nil, limit: Int? = nil) throws -> [Memory] {
        var sql = "SELECT \(MemoryStore.cols) FROM memories"
        var args: [SqlValue] = []
        if let u = user { sql += " WHERE user = ?"; args.append(.text(u)) }
        sql += " ORDER BY seq"
        if let l = limit { sql += " LIMIT ?"; args.append(.int(Int64(l))) }
        return try db.query(sql, args).map(row)
    }

    public func count(user: String? = nil) throws -> Int {
        let r: [[SqlValue]]
        if let u = user {
            r = try db.query("SELECT COUNT(*) FROM memories WHERE user = ?", [.text(u)])
        } else {
            r = try db.query("SELECT COUNT(*) FROM memories")
        }
        return Int(r[0][0].int ?? 0)
    }

    public func users() throws -> [String] {
        try db.query("SELECT DISTINCT user FROM memories ORDER BY user").compactMap { $0[0].string }
    }

    /// Logged events (for one memory, or all), oldest first.
    public func history(_ memoryId: String? = nil) throws -> [HistoryEntry] {
        var sql = "SELECT id, memory_id, event, old_text, new_text, at, actor FROM history"
        var args: [SqlValue] = []
        if let m = memoryId { sql += " WHERE memory_id = ?"; args.append(.text(m)) }
        return try db.query(sql + " ORDER BY id", args).map {
            HistoryEntry(id: $0[0].int ?? 0, memoryId: $0[1].string ?? "", event: $0[2].string ?? "", oldText: $0[3].string,
                         newText: $0[4].string, at: $0[5].string ?? "", actor: $0[6].string ?? "")
        }
    }

    /// Top-`k` memories of `user`, best first: BM25 via FTS5, else token overlap.
    public func search(_ queryText: String, user: String, k: Int = 5) throws -> [SearchHit] {
        if k <= 0 { return [] }
        if useFts { return try ftsSearch(queryText, user, k) }
        return try overlapSearch(queryText, user, k)
    }

    private func ftsSearch(_ query: String, _ user: String, _ k: Int) throws -> [SearchHit] {
        var toks: [String] = []
        for t in PyText.tokens(query) where !toks.contains(t) { toks.append(t) }
        if toks.isEmpty { return [] }
        let match = toks.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }.joined(separator: " OR ")
        let rows = try db.query("SELECT m.id, m.user, m.text, m.created_at, m.updated_at, m.embedding IS NOT NULL,"
            + " bm25(memories_fts) FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid"
            + " WHERE memories_fts MATCH ? AND m.user = ? ORDER BY bm25(memories_fts), m.seq LIMIT ?",
            [.text(match), .text(user), .int(Int64(k))])
        return rows.map { SearchHit(memory: row($0), score: -($0[6].double ?? 0)) }
    }

    private func overlapSearch(_ query: String, _ user: String, _ k: Int) throws -> [SearchHit] {
        let q = Set(PyText.tokens(query))
        var scored: [SearchHit] = []
        for r in try db.query("SELECT \(MemoryStore.cols), text FROM memories WHERE user = ? ORDER BY seq", [.text(user)]) {
            let words = PyText.tokens(r[6].string ?? "")
            let overlap = Set(words).filter { q.contains($0) }.count
            if overlap > 0 { scored.append(SearchHit(memory: row(r), score: Double(overlap) / Double(words.count).squareRoot())) }
        }
        return Array(stableSortedByScore(scored).prefix(k))
    }

    public func close() { db.close() }
}

/// Best first, ties in input order (Python's `sorted(key=-score)` is stable; Swift's sort is not).
func stableSortedByScore(_ hits: [SearchHit]) -> [SearchHit] {
    hits.enumerated().sorted { a, b in
        a.element.score != b.element.score ? a.element.score > b.element.score : a.offset < b.offset
    }.map { $0.element }
}
