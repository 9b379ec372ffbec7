import Testing
@Test func frontendTestsPlaceholder() {}
