"""contra-intraocular-pressure: the record shows Glaucoma -> contraindicated."""

from contra_checks import ContraindicationChecks

S = "contra-intraocular-pressure"


class TestContraIntraocularPressure(ContraindicationChecks):
    statement = S
    concept = "intraocular-pressure"
    display = "Glaucoma"
