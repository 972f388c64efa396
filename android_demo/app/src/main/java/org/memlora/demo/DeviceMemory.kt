package org.memlora.demo

import android.app.ActivityManager
import android.content.Context

/** A warning when the resident programs will not fit this device's RAM (null when they do). */
fun ramWarning(context: Context, residentBytes: Long): String? {
    val am = context.getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager
    val info = ActivityManager.MemoryInfo()
    am.getMemoryInfo(info)
    val need = residentBytes * 12 / 10 // programs + ~20% for KV cache, activations and the app
    val mb = { b: Long -> b / (1024 * 1024) }
    return when {
        need > info.totalMem / 2 ->
            "The programs need about ${mb(need)} MB, more than half of this device's ${mb(info.totalMem)} MB: Android will likely kill the app. Use an int4 export or a smaller model."
        need > info.availMem ->
            "The programs need about ${mb(need)} MB but only ${mb(info.availMem)} MB are free now: close other apps first."
        info.lowMemory -> "The device reports low memory."
        else -> null
    }
}
