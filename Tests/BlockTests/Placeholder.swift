import Testing
@Test func BlockTestsPlaceholder() {}
