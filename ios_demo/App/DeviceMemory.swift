import Foundation
import os

/// A warning when the loaded models would not fit in what iOS lets this app use
/// (`os_proc_available_memory`, the jetsam headroom), or nil.
func ramWarning(residentBytes: Int64) -> String? {
    let available = Int64(os_proc_available_memory())
    guard available > 0, residentBytes > available * 8 / 10 else { return nil }
    let mb = { (b: Int64) in b / (1024 * 1024) }
    return "The models need about \(mb(residentBytes)) MB; iOS allows this app about \(mb(available)) MB more. "
        + "Expect the app to be stopped: use an int4 export or a smaller model (or the Increased Memory Limit entitlement)."
}

/// Bytes on disk of every file under `url` (a package folder or a file).
func diskBytes(_ url: URL) -> Int64 {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else { return 0 }
    if !isDir.boolValue {
        let attrs = try? fm.attributesOfItem(atPath: url.path)
        return (attrs?[.size] as? NSNumber)?.int64Value ?? 0
    }
    guard let walker = fm.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) else { return 0 }
    var total: Int64 = 0
    for case let f as URL in walker {
        total += Int64((try? f.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0)
    }
    return total
}
