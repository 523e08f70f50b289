#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PrepareRoot

// The initramfs program: everything is in the PrepareRoot library.
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "seal" {
    exit(PrepareRoot.seal(arguments: Array(arguments.dropFirst())))
}
exit(PrepareRoot.main(arguments: arguments))
