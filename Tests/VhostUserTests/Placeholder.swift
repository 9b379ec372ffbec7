import Testing
@Test func VhostUserTestsPlaceholder() {}
