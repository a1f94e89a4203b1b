"""contra-hepatic: the record shows Cirrhosis -> contraindicated."""

from contra_checks import ContraindicationChecks

S = "contra-hepatic"


class TestContraHepatic(ContraindicationChecks):
    statement = S
    concept = "liver-disease-severe"
    display = "Cirrhosis"
