import Testing
@Test func monitorTestsPlaceholder() {}
