from globmed_edge.cli.main import main

main()
