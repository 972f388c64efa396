package org.memlora.demo

import android.content.Context
import android.net.Uri
import android.provider.DocumentsContract
import java.io.File

/**
 * Copies a bundle folder picked with the system file picker (ACTION_OPEN_DOCUMENT_TREE) into the
 * app's files dir, so ExecuTorch can open the programs by path. [progress] gets (bytes, name).
 */
fun importTree(context: Context, tree: Uri, progress: (Long, String) -> Unit): File {
    val root = DocumentsContract.buildDocumentUriUsingTree(tree, DocumentsContract.getTreeDocumentId(tree))
    val name = DocumentsContract.getTreeDocumentId(tree).substringAfterLast('/').ifEmpty { "bundle" }
    val out = File(context.filesDir, "bundles/$name")
    out.deleteRecursively()
    var done = 0L
    fun copy(doc: Uri, dir: File) {
        dir.mkdirs()
        val children = DocumentsContract.buildChildDocumentsUriUsingTree(tree, DocumentsContract.getDocumentId(doc))
        val cols = arrayOf(DocumentsContract.Document.COLUMN_DOCUMENT_ID, DocumentsContract.Document.COLUMN_DISPLAY_NAME,
            DocumentsContract.Document.COLUMN_MIME_TYPE)
        context.contentResolver.query(children, cols, null, null, null)?.use { c ->
            while (c.moveToNext()) {
                val child = DocumentsContract.buildDocumentUriUsingTree(tree, c.getString(0))
                val childName = c.getString(1)
                if (childName.contains('/') || childName == ".." ) continue
                if (c.getString(2) == DocumentsContract.Document.MIME_TYPE_DIR) {
                    copy(child, File(dir, childName))
                } else {
                    context.contentResolver.openInputStream(child)?.use { input ->
                        File(dir, childName).outputStream().use { output ->
                            val buf = ByteArray(1 shl 20)
                            while (true) {
                                val n = input.read(buf)
                                if (n < 0) break
                                output.write(buf, 0, n)
                                done += n
                                progress(done, childName)
                            }
                        }
                    }
                }
            }
        }
    }
    copy(root, out)
    return out
}
