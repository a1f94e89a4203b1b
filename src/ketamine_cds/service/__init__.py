"""The HTTP service: CDS Hooks 2.0 for EHRs and the clinician web page, on the same engine."""
