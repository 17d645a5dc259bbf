from cnnfilter.cli import main

main()
