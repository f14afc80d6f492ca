"""The model zoo: MNIST-5k data and the ImageNet loaders (:mod:`.data`), the shipped models and
their checkpoints (:mod:`.models`; importing it registers ``resnet20`` for
:func:`mixquant_lite.load_quantized`), training (``python -m mixquant_lite.zoo.train``), and
testbeds (:mod:`.testbeds`: a model with its calibration and evaluation images)."""
