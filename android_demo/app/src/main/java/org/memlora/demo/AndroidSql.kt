package org.memlora.demo

import android.database.Cursor
import android.database.sqlite.SQLiteDatabase
import memlora.core.Sql
import java.io.File

/**
 * The core's [Sql] seam over Android's [SQLiteDatabase]. The platform SQLite may be built
 * without FTS5; the store then falls back to token-overlap retrieval, exactly as Python does.
 */
class AndroidSql(file: File) : Sql {
    private val db: SQLiteDatabase = SQLiteDatabase.openOrCreateDatabase(file, null).also {
        it.enableWriteAheadLogging()
    }

    override fun execute(sql: String, args: List<Any?>) {
        if (args.isEmpty()) db.execSQL(sql) else db.execSQL(sql, args.toTypedArray())
    }

    override fun query(sql: String, args: List<Any?>): List<List<Any?>> {
        // rawQuery binds strings only; SQLite converts "5" for LIMIT and compares TEXT columns as TEXT.
        val cursor = db.rawQuery(sql, args.map { it?.toString() }.toTypedArray())
        cursor.use { c ->
            val out = ArrayList<List<Any?>>()
            while (c.moveToNext()) out.add((0 until c.columnCount).map { value(c, it) })
            return out
        }
    }

    private fun value(c: Cursor, i: Int): Any? = when (c.getType(i)) {
        Cursor.FIELD_TYPE_NULL -> null
        Cursor.FIELD_TYPE_INTEGER -> c.getLong(i)
        Cursor.FIELD_TYPE_FLOAT -> c.getDouble(i)
        Cursor.FIELD_TYPE_BLOB -> c.getBlob(i)
        else -> c.getString(i)
    }

    override fun <T> transaction(block: () -> T): T {
        db.beginTransaction()
        try {
            val r = block()
            db.setTransactionSuccessful()
            return r
        } finally {
            db.endTransaction()
        }
    }

    override fun close() = db.close()
}
