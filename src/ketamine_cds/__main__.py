from ketamine_cds._cli import main  # absolute: spark-submit runs this file as a script

raise SystemExit(main())
