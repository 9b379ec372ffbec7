import Testing
@Test func VirtioBlkTestsPlaceholder() {}
