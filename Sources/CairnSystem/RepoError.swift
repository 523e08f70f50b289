/// An error of the layers above the system calls (repository, sysroot,
/// deployments): what was being done (with the path, ref or object
/// involved) and why. GLib's `GError` never leaves the repository layer.
public struct RepoError: Error, CustomStringConvertible {
    public var context: String
    public var reason: String

    public init(_ context: String, _ reason: String) {
        self.context = context
        self.reason = reason
    }

    public var description: String { reason.isEmpty ? context : "\(context): \(reason)" }
}
