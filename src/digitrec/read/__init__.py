"""Reading whole numbers: line preparation, the CTC line reader, the segmenter and its verifier."""
