// BlockIO
