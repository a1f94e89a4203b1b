"""contra-psychosis: the record shows Schizophrenia -> contraindicated."""

from contra_checks import ContraindicationChecks

S = "contra-psychosis"


class TestContraPsychosis(ContraindicationChecks):
    statement = S
    concept = "psychosis"
    display = "Schizophrenia"
