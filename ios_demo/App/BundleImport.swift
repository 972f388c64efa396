import Foundation

/// Where bundles live in the app's sandbox. `Documents/` is visible in Finder (iPhone > Files) and
/// the Files app (UIFileSharingEnabled + LSSupportsOpeningDocumentsInPlace in project.yml), so a
/// bundle can be dropped into `Documents/bundle` from a Mac without any picker.
enum BundlePlaces {
    static var documents: URL { FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0] }
    static var defaultBundle: URL { documents.appendingPathComponent("bundle", isDirectory: true) }
    static var imported: URL { documents.appendingPathComponent("bundles", isDirectory: true) }
    static var store: URL {
        let dir = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("memories.sqlite")
    }
}

/// Copy a folder picked with `.fileImporter` (security-scoped, maybe on iCloud Drive or a USB
/// drive) into the app's Documents, so Core ML can compile and mmap the packages from a stable
/// path. `progress` gets (bytes copied, file name).
func importBundleFolder(_ picked: URL, progress: (Int64, String) -> Void) throws -> URL {
    let scoped = picked.startAccessingSecurityScopedResource()
    defer { if scoped { picked.stopAccessingSecurityScopedResource() } }
    let fm = FileManager.default
    let out = BundlePlaces.imported.appendingPathComponent(picked.lastPathComponent, isDirectory: true)
    try? fm.removeItem(at: out)
    try fm.createDirectory(at: out, withIntermediateDirectories: true)
    var done: Int64 = 0
    let keys: [URLResourceKey] = [.isDirectoryKey, .fileSizeKey]
    guard let walker = fm.enumerator(at: picked, includingPropertiesForKeys: keys) else {
        throw CocoaError(.fileReadNoPermission)
    }
    let rootPath = picked.standardizedFileURL.path
    for case let src as URL in walker {
        let rel = String(src.standardizedFileURL.path.dropFirst(rootPath.count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if rel.isEmpty || rel.split(separator: "/").contains("..") { continue }
        let dst = out.appendingPathComponent(rel)
        let values = try src.resourceValues(forKeys: Set(keys))
        if values.isDirectory == true {
            try fm.createDirectory(at: dst, withIntermediateDirectories: true)
        } else {
            try fm.createDirectory(at: dst.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.copyItem(at: src, to: dst)
            done += Int64(values.fileSize ?? 0)
            progress(done, src.lastPathComponent)
        }
    }
    return out
}
