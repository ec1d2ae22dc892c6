from palsyseg.cli import main

main()
