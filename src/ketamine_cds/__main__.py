from ketamine_cds._cli import main  # absolute: spark-submit runs this file as a script

if __name__ == "__main__":  # not when a spawned worker process loads this file
    raise SystemExit(main())
