#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import PrepareRoot

// The initramfs program: everything is in the PrepareRoot library.
exit(PrepareRoot.main(arguments: Array(CommandLine.arguments.dropFirst())))
