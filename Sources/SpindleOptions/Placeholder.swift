// SpindleOptions
