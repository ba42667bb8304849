import Foundation

/// The repository the tests run from.
public enum Repository {
    /// Its root, from this file's path (Tests/Support/Repository.swift).
    public static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}
