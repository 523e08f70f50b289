import PrepareRoot
import XCTest

final class ParserTests: XCTestCase {
    func testPlaceholder() throws {
        let b = try BootArguments(commandLine: Array("quiet ostree=/ostree/boot.1/os/abc/0 rw".utf8))
        XCTAssertEqual(b.ostreePath, Array("/ostree/boot.1/os/abc/0".utf8))
    }
}
