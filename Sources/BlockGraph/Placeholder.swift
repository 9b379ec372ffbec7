// BlockGraph
