import Testing
@Test func placementTestsPlaceholder() {}
