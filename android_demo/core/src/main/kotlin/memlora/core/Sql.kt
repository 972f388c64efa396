package memlora.core

import java.sql.Connection
import java.sql.DriverManager
import java.sql.SQLException

/**
 * The small SQL seam the store needs: Android's `SQLiteDatabase` in the app, JDBC on the host.
 * Arguments are String, Long, Double, ByteArray or null; rows hold the same types.
 */
interface Sql {
    fun execute(sql: String, args: List<Any?> = emptyList())
    fun query(sql: String, args: List<Any?> = emptyList()): List<List<Any?>>
    /** Run [block] in one write transaction: committed if it returns, rolled back if it throws. */
    fun <T> transaction(block: () -> T): T
    fun close()
}

/** [Sql] over a JDBC connection (xerial sqlite-jdbc on the host). */
class JdbcSql(private val con: Connection) : Sql {
    companion object {
        fun open(path: String): JdbcSql {
            Class.forName("org.sqlite.JDBC")
            val sql = JdbcSql(DriverManager.getConnection("jdbc:sqlite:$path"))
            if (path != ":memory:") {
                sql.query("PRAGMA journal_mode=WAL")
                sql.execute("PRAGMA synchronous=FULL")
            }
            return sql
        }
    }

    private var depth = 0

    private fun bind(st: java.sql.PreparedStatement, args: List<Any?>) {
        for ((i, a) in args.withIndex()) {
            when (a) {
                null -> st.setObject(i + 1, null)
                is String -> st.setString(i + 1, a)
                is Int -> st.setLong(i + 1, a.toLong())
                is Long -> st.setLong(i + 1, a)
                is Double -> st.setDouble(i + 1, a)
                is ByteArray -> st.setBytes(i + 1, a)
                else -> throw IllegalArgumentException("unsupported SQL argument ${a.javaClass.name}")
            }
        }
    }

    override fun execute(sql: String, args: List<Any?>) {
        val st = con.prepareStatement(sql)
        try { bind(st, args); st.execute() } finally { st.close() }
    }

    override fun query(sql: String, args: List<Any?>): List<List<Any?>> {
        val st = con.prepareStatement(sql)
        try {
            bind(st, args)
            val rs = st.executeQuery()
            try {
                val n = rs.metaData.columnCount
                val out = ArrayList<List<Any?>>()
                while (rs.next()) {
                    val row = ArrayList<Any?>(n)
                    for (c in 1..n) {
                        val v = rs.getObject(c)
                        row.add(if (v is Int) v.toLong() else v)
                    }
                    out.add(row)
                }
                return out
            } finally {
                rs.close()
            }
        } finally {
            st.close()
        }
    }

    override fun <T> transaction(block: () -> T): T {
        if (depth > 0) return block()
        con.autoCommit = false
        depth++
        try {
            val r = block()
            con.commit()
            return r
        } catch (e: Throwable) {
            try { con.rollback() } catch (ignored: SQLException) { }
            throw e
        } finally {
            depth--
            con.autoCommit = true
        }
    }

    override fun close() = con.close()
}
