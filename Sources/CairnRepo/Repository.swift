import COSTree
