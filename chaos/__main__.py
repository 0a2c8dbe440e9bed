from chaos.run import main

main()
