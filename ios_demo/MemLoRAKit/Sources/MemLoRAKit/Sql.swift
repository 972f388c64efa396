import Foundation
#if canImport(SQLite3)
import SQLite3
#else
import CSQLite
#endif

/// A value bound to or read from SQLite: text, integer, real, blob or null.
public enum SqlValue: Equatable {
    case null
    case int(Int64)
    case real(Double)
    case text(String)
    case blob(Data)

    public var string: String? { if case .text(let s) = self { return s }; return nil }
    public var int: Int64? { if case .int(let i) = self { return i }; return nil }
    public var double: Double? {
        switch self {
        case .real(let d): return d
        case .int(let i): return Double(i)
        default: return nil
        }
    }
}

public struct SqlError: Error, CustomStringConvertible {
    public let description: String
}

/// The small SQL seam the store needs (the Kotlin core's `Sql`): the system SQLite on iOS and
/// macOS, libsqlite3 on Linux.
public protocol Sql: AnyObject {
    func execute(_ sql: String, _ args: [SqlValue]) throws
    func query(_ sql: String, _ args: [SqlValue]) throws -> [[SqlValue]]
    /// Run `block` in one write transaction: committed if it returns, rolled back if it throws.
    func transaction<T>(_ block: () throws -> T) throws -> T
    func close()
}

public extension Sql {
    func execute(_ sql: String) throws { try execute(sql, []) }
    func query(_ sql: String) throws -> [[SqlValue]] { try query(sql, []) }
}

private let SQLITE_TRANSIENT_PTR = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// `Sql` over a sqlite3 connection.
public final class SQLiteDatabase: Sql {
    private var db: OpaquePointer?
    private var depth = 0

    /// Open (or create) `path`; ":memory:" for an in-memory database. WAL + synchronous=FULL on files.
    public init(path: String) throws {
        if sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil) != SQLITE_OK {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            db = nil
            throw SqlError(description: "cannot open \(path): \(msg)")
        }
        if path != ":memory:" {
            _ = try query("PRAGMA journal_mode=WAL")
            try execute("PRAGMA synchronous=FULL")
        }
    }

    deinit { close() }

    private func error(_ what: String) -> SqlError {
        SqlError(description: "\(what): \(db.map { String(cString: sqlite3_errmsg($0)) } ?? "closed")")
    }

    private func prepare(_ sql: String, _ args: [SqlValue]) throws -> OpaquePointer {
        var st: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &st, nil) == SQLITE_OK, let stmt = st else {
            sqlite3_finalize(st)
            throw error("prepare \(sql.prefix(60))")
        }
        for (i, a) in args.enumerated() {
            let idx = Int32(i + 1)
            let rc: Int32
            switch a {
            case .null: rc = sqlite3_bind_null(stmt, idx)
            case .int(let v): rc = sqlite3_bind_int64(stmt, idx, v)
            case .real(let v): rc = sqlite3_bind_double(stmt, idx, v)
            case .text(let v): rc = sqlite3_bind_text(stmt, idx, v, Int32(v.utf8.count), SQLITE_TRANSIENT_PTR)  // embedded NULs kept
            case .blob(let v):
                rc = v.withUnsafeBytes { sqlite3_bind_blob(stmt, idx, $0.baseAddress, Int32($0.count), SQLITE_TRANSIENT_PTR) }
            }
            if rc != SQLITE_OK { sqlite3_finalize(stmt); throw error("bind \(i + 1)") }
        }
        return stmt
    }

    public func execute(_ sql: String, _ args: [SqlValue]) throws {
        let st = try prepare(sql, args)
        defer { sqlite3_finalize(st) }
        var rc = sqlite3_step(st)
        while rc == SQLITE_ROW { rc = sqlite3_step(st) }
        if rc != SQLITE_DONE { throw error("execute \(sql.prefix(60))") }
    }

    public func query(_ sql: String, _ args: [SqlValue]) throws -> [[SqlValue]] {
        let st = try prepare(sql, args)
        defer { sqlite3_finalize(st) }
        var out: [[SqlValue]] = []
        let n = sqlite3_column_count(st)
        while true {
            let rc = sqlite3_step(st)
            if rc == SQLITE_DONE { break }
            if rc != SQLITE_ROW { throw error("query \(sql.prefix(60))") }
            var row: [SqlValue] = []
            for c in 0..<n {
                switch sqlite3_column_type(st, c) {
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(st, c)))
                case SQLITE_FLOAT: row.append(.real(sqlite3_column_double(st, c)))
                case SQLITE_TEXT:
                    let len = Int(sqlite3_column_bytes(st, c))
                    let text = sqlite3_column_text(st, c).map { String(decoding: UnsafeBufferPointer(start: $0, count: len), as: UTF8.self) }
                    row.append(.text(text ?? ""))
                case SQLITE_BLOB:
                    let len = Int(sqlite3_column_bytes(st, c))
                    if len > 0, let p = sqlite3_column_blob(st, c) { row.append(.blob(Data(bytes: p, count: len))) } else { row.append(.blob(Data())) }
                default: row.append(.null)
                }
            }
            out.append(row)
        }
        return out
    }

    public func transaction<T>(_ block: () throws -> T) throws -> T {
        if depth > 0 { return try block() }
        try execute("BEGIN IMMEDIATE")
        depth += 1
        defer { depth -= 1 }
        do {
            let r = try block()
            try execute("COMMIT")
            return r
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    public func close() {
        if let d = db { sqlite3_close_v2(d) }
        db = nil
    }
}
